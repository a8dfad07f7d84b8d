"""Helpers the tests share; fixtures stay in tests/conftest.py.

- `processes`: real `farm worker` processes, and waiting for a condition;
- `spec_files`: spec, dataset, suite and model folders to validate;
- `farm`: submit through the CLI and read back stages and attempts;
- `faults`: private Redis servers, killing process trees, fault timings;
- `netns`: hosts in network namespaces, for partitions;
- `web`: Streamlit pages under AppTest.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
