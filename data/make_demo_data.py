"""Generate the demo Code-Mode dataset: data/datasets/code_mode/{train,valid}.jsonl.

    uv run python data/make_demo_data.py

Deterministic (fixed seed, fixed iteration order): running it twice gives
byte-identical files, so the dataset digest in a run's config fingerprint only
changes when this script does.

About 70% of the examples are tool calls in the execute_code wrapper (Qwen3
XML form), 30% are direct answers. The system prompt and the tool API come
from the demo eval suite, and every generated code block is checked against
that API by the preflight check itself (`jobs.checks.code_api_problems`: tool
names, keyword parameters, result attributes): the "training distribution gap"
of earlier runs was exactly training data that used result attributes the
runtime does not have. Each answer is written by the Code-Mode format module
(`jobs.formats.code_mode`) and read back by the scorer's parser, so the data is
the format the suite scores as 1.0. The suite's prompts are held out: no
training prompt equals one of them, and the direct-answer topics of the suite
are not covered here.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from string import Template
from typing import NamedTuple

from jobs import formats
from jobs.checks import code_api_problems
from jobs.formats import code_mode
from jobs.suite import EvalSuite, load_suite

ROOT = Path(__file__).resolve().parent
SUITE = ROOT / "evals" / "code_mode.yaml"
OUT = ROOT / "datasets" / "code_mode"
SEED = 20260218
N_SINGLE_PER_TOOL = 11
N_MULTI = 40


class Flavor(NamedTuple):
    """One dataset the script writes, for one suite."""

    suite: Path
    out: Path
    per_tool: int  # single-tool examples per tool of the suite
    n_multi: int  # multi-tool examples (templates whose tools are all in the suite)


FLAVORS = {
    # Every tool of the Code-Mode API: the wrapper is learned in a laptop-CPU
    # budget, routing among 26 tools is not.
    "code_mode": Flavor(SUITE, OUT, N_SINGLE_PER_TOOL, N_MULTI),
    # Five tools and clear prompts: what the tiny model can learn in minutes,
    # so the demo's configurations and seeds separate (`farm demo`).
    "core": Flavor(ROOT / "evals" / "core.yaml", ROOT / "datasets" / "core", 45, 24),
}
VALID_SHARE = 0.1

# --- names the prompts talk about (none from the suite's "billing" project) --

FILES = [
    "src/app.py", "src/cli.py", "src/config.py", "src/models/user.py",
    "src/models/order.py", "src/api/routes.py", "src/api/schemas.py",
    "src/services/auth.py", "src/services/mailer.py", "src/db/session.py",
    "src/db/migrations.py", "src/utils/strings.py", "src/utils/dates.py",
    "src/orders/cart.py", "src/orders/checkout.py", "src/search/index.py",
    "src/search/ranking.py", "src/workers/queue.py", "src/reports/export.py",
    "src/auth/tokens.py",
]  # fmt: skip
DIRS = [
    "src/", "src/api/", "src/models/", "src/services/", "src/orders/",
    "src/search/", "src/utils/", "src/db/", "src/workers/", "src/auth/",
]  # fmt: skip
TESTS = [
    "tests/", "tests/test_auth.py", "tests/test_cart.py", "tests/test_search.py",
    "tests/unit/", "tests/api/", "tests/test_models.py", "tests/test_queue.py",
    "tests/e2e/", "tests/test_config.py",
]  # fmt: skip
SYMBOLS = [
    "UserService", "parse_config", "OrderRepository", "send_email", "CartItem",
    "build_index", "SessionFactory", "TokenStore", "rank_results", "JobQueue",
    "format_date", "Settings", "create_app", "Checkout",
]  # fmt: skip
COMPONENTS = [
    ("UserCard", "src/components/user_card.py"),
    ("NavBar", "src/components/nav_bar.py"),
    ("OrderSummary", "src/components/order_summary.py"),
    ("SearchBox", "src/components/search_box.py"),
    ("PageLayout", "src/components/page_layout.py"),
    ("CartPanel", "src/components/cart_panel.py"),
]
SERVICE_FILES = [
    "src/services/registry.py", "src/services/container.py", "src/app_services.py",
    "src/orders/services.py", "src/auth/services.py", "src/search/services.py",
]  # fmt: skip
ROUTE_FILES = ["src/web/routes.py", "src/api/routes.py", "src/web/admin_routes.py",
               "src/orders/routes.py", "src/search/routes.py"]  # fmt: skip
MIDDLEWARE_FILES = ["src/web/middleware.py", "src/api/middleware.py",
                    "src/app.py", "src/auth/middleware.py"]  # fmt: skip
VIEW_FILES = ["src/views/user_page.py", "src/views/order_page.py",
              "src/views/dashboard.py", "src/views/search_page.py"]  # fmt: skip
COMMANDS = [
    "ls src", "python --version", "uv pip list", "wc -l src/app.py",
    "grep -rn TODO src", "du -sh .venv", "uv lock --check", "make docs",
]  # fmt: skip
PATTERNS = [
    ("print calls", 'm.Call(func=m.Name("print"))'),
    ("function definitions", "m.FunctionDef()"),
    ("class definitions", "m.ClassDef()"),
    ("assert statements", "m.Assert()"),
    ("calls to open", 'm.Call(func=m.Name("open"))'),
    ("global statements", "m.Global()"),
    ("lambda expressions", "m.Lambda()"),
]
IMPORTS = [
    "import json", "from pathlib import Path", "from typing import Any",
    "import logging", "from collections import defaultdict",
    "from datetime import datetime", "import re",
]  # fmt: skip
RENAMES = [
    ("get_user", "fetch_user"), ("calc_total", "compute_total"), ("tmp", "buffer"),
    ("do_work", "process_job"), ("UserMgr", "UserManager"), ("cfg", "settings"),
    ("make_conn", "connect"),
]  # fmt: skip
QUERIES = ["Config", "User", "parse", "Order", "handler", "Session", "Token", "index"]


def _pick(rng: random.Random) -> dict[str, str]:
    """One set of names for a template; every template uses a subset of them."""
    component, component_file = rng.choice(COMPONENTS)
    old, new = rng.choice(RENAMES)
    pattern_text, pattern = rng.choice(PATTERNS)
    return {
        "file": rng.choice(FILES),
        "path": rng.choice(FILES + DIRS),
        "dir": rng.choice(DIRS),
        "tests": rng.choice(TESTS),
        "symbol": rng.choice(SYMBOLS),
        "line": str(rng.randint(3, 240)),
        "col": str(rng.randint(1, 40)),
        "component": component,
        "component_file": component_file,
        "service_file": rng.choice(SERVICE_FILES),
        "route_file": rng.choice(ROUTE_FILES),
        "middleware_file": rng.choice(MIDDLEWARE_FILES),
        "view_file": rng.choice(VIEW_FILES),
        "command": rng.choice(COMMANDS),
        "pattern_text": pattern_text,
        "pattern": pattern.replace('"', '\\"'),
        "import_stmt": rng.choice(IMPORTS),
        "old": old,
        "new": new,
        "query": rng.choice(QUERIES),
        "count": str(rng.choice([3, 5, 10, 20])),
    }


# --- tool examples: per tool, groups of (prompt templates, code templates) ---
# Within a group every prompt fits every code block, so a prompt that names a
# directory never gets code for a file and a question about counts gets code
# that prints the count.

Group = tuple[list[str], list[str]]


def _domain(tool: str, target: str, prompts: list[str]) -> list[Group]:
    """The validators share one result shape: valid, domain, issues."""
    call = f'result = {tool}("{target}")'
    return [
        (
            prompts[:2],
            [f"{call}\nprint(result.valid)", f"{call}\nprint(result.domain, result.valid)"],
        ),
        (
            prompts[2:],
            [
                f"{call}\nfor issue in result.issues:\n    print(issue)",
                f"{call}\nprint(result.issues)",
            ],
        ),
    ]


TOOLS: dict[str, list[Group]] = {
    "read_file": [
        (["Read $file.", "Open $file and show it to me.", "What is in $file?",
          "Print the contents of $file.", "Show me $file."],
         ['result = read_file("$file")\nprint(result.content)']),
        (["How long is $file?", "How many lines does $file have?"],
         ['result = read_file("$file")\nprint(result.line_count)']),
    ],
    "write_file": [
        (["Create $file with a module docstring.", "Add a module docstring file at $file."],
         ['result = write_file("$file", \'"""Module docstring."""\\n\')\n'
          "print(result.success, result.bytes_written)"]),
        (["Write an empty __init__.py into $dir", "Create an empty ${dir}__init__.py"],
         ['result = write_file("${dir}__init__.py", "")\nprint(result.path, result.success)']),
        (["Overwrite $file with a placeholder comment.", "Replace $file with a placeholder."],
         ['result = write_file("$file", "# placeholder\\n")\nprint(result.bytes_written)']),
    ],
    "run_command": [
        (["Run `$command`.", "Execute $command in the project root.",
          "What does `$command` print?", "Please run $command for me."],
         ['result = run_command("$command")\nprint(result.stdout)',
          'result = run_command("$command")\nprint(result.exit_code, result.stdout)']),
    ],
    "typecheck": [
        (["Check $path for type errors.", "Run the type checker on $path",
          "How many type errors are in $path?", "Run ty on $path"],
         ['result = typecheck("$path")\nprint(result.error_count)',
          'result = typecheck("$path")\nprint(result.error_count, result.warning_count)']),
        (["Type-check $path and list the errors.", "Does $path pass type checking?",
          "Show me the type errors in $path"],
         ['result = typecheck("$path")\nfor error in result.errors:\n    print(error)']),
    ],
    "ruff_check": [
        (["Lint $path", "Run ruff on $path", "Are there lint violations in $path?",
          "How many ruff violations does $path have?"],
         ['result = ruff_check("$path")\nprint(result.violation_count)']),
        (["Which lint problems in $path are fixable?",
          "How many lint issues can ruff fix in $path?"],
         ['result = ruff_check("$path")\nprint(result.violation_count, result.fixable_count)']),
        (["List the ruff violations in $path", "Show the lint errors of $path"],
         ['result = ruff_check("$path")\nfor violation in result.violations:\n'
          "    print(violation)"]),
    ],
    "pytest_run": [
        (["Run the tests in $tests", "Run pytest on $tests", "Do the tests in $tests pass?",
          "Execute the test suite $tests"],
         ['result = pytest_run("$tests")\nprint(result.passed, result.failed)']),
        (["How many tests fail in $tests?", "Count the failing tests in $tests"],
         ['result = pytest_run("$tests")\nprint(result.failed)']),
        (["Which tests are skipped in $tests?", "How slow are the tests in $tests?"],
         ['result = pytest_run("$tests")\nprint(result.skipped, result.duration)']),
    ],
    "goto_definition": [
        (["Where is $symbol defined? It is used in $file line $line.",
          "Go to the definition of $symbol from $file:$line.",
          "Jump to where $symbol comes from (see $file, line $line)."],
         ['result = goto_definition(file_path="$file", line=$line, column=$col, '
          'symbol="$symbol")\nprint(result.locations)']),
    ],
    "find_references": [
        (["Find all references to $symbol in $file.", "Who uses $symbol? It is in $file.",
          "List the usages of $symbol ($file)."],
         ['result = find_references(file_path="$file", line=$line, column=$col, '
          'symbol="$symbol")\nfor ref in result.references:\n    print(ref)']),
        (["How many places reference $symbol from $file?",
          "Count the references to $symbol in $file."],
         ['result = find_references(file_path="$file", line=$line, column=$col, '
          'symbol="$symbol")\nprint(result.reference_count)']),
    ],
    "hover": [
        (["What is the type of $symbol on line $line of $file?",
          "Show the docstring of $symbol in $file at line $line.",
          "Hover over $symbol at $file:$line."],
         ['result = hover(file_path="$file", line=$line, column=$col, symbol="$symbol")\n'
          "print(result.content)"]),
    ],
    "document_symbols": [
        (["List the symbols in $file.", "What functions are defined in $file?",
          "Give me an outline of $file."],
         ['result = document_symbols("$file")\nfor symbol in result.symbols:\n    print(symbol)']),
        (["How many symbols does $file define?", "Count the definitions in $file."],
         ['result = document_symbols("$file")\nprint(result.symbol_count)']),
    ],
    "workspace_symbols": [
        (["Search the workspace for symbols named $query.",
          "Find every symbol matching '$query' in the project.",
          "Which classes or functions contain $query in their name?"],
         ['result = workspace_symbols("$query")\nfor symbol in result.symbols:\n'
          "    print(symbol)"]),
        (["How many symbols match $query?", "Count the workspace symbols called $query."],
         ['result = workspace_symbols("$query")\nprint(result.symbol_count)']),
    ],
    "git_status": [
        (["What is the git status?", "Is my working tree clean?", "Is the repo clean?"],
         ['result = git_status(".")\nprint(result.clean)',
          'result = git_status(".")\nprint(result.clean, result.file_count)']),
        (["Show git status for $dir", "Which files are modified in $dir?"],
         ['result = git_status("$dir")\nfor file in result.files:\n    print(file)']),
        (["How many files have changes?", "Count the modified files."],
         ['result = git_status(".")\nprint(result.file_count, result.files)']),
    ],
    "git_diff": [
        (["Show the diff of $path", "What changed in $path?",
          "Summarize the unstaged changes in $path"],
         ['result = git_diff("$path", staged=False)\nprint(result.files)',
          'result = git_diff("$path", staged=False)\nprint(result.file_count, result.additions)']),
        (["Show me the staged diff.", "What is staged for the next commit?"],
         ['result = git_diff(".", staged=True)\nprint(result.files)\n'
          "print(result.additions, result.deletions)"]),
        (["How many lines were deleted in my working tree?", "How big is my unstaged diff?"],
         ['result = git_diff(".", staged=False)\nprint(result.additions, result.deletions)']),
    ],
    "git_log": [
        (["Show the last $count commits.", "List the last $count commits."],
         ['result = git_log(".", count=$count)\nfor commit in result.commits:\n    print(commit)']),
        (["What were the recent commits in $path", "List the last $count commits for $path",
          "Show the git history of $path"],
         ['result = git_log("$path", count=$count)\nprint(result.commit_count)\n'
          "print(result.commits)"]),
    ],
    "cst_find_pattern": [
        (["Find all $pattern_text in $file.", "Search $file for $pattern_text."],
         ['result = cst_find_pattern("$file", "$pattern")\nfor match in result.matches:\n'
          "    print(match)"]),
        (["How many $pattern_text are there in $file?", "Count the $pattern_text in $file."],
         ['result = cst_find_pattern("$file", "$pattern")\nprint(result.match_count)']),
    ],
    "cst_rename": [
        (["Rename $old to $new in $file.", "In $file, rename $old to $new.",
          "Change the name $old to $new throughout $file."],
         ['result = cst_rename("$file", "$old", "$new")\nprint(result.rename_count)']),
    ],
    "cst_add_import": [
        (["Add `$import_stmt` to $file.", "Make sure $file has '$import_stmt'.",
          "Insert the import $import_stmt into $file."],
         ['result = cst_add_import("$file", "$import_stmt")\nprint(result.import_added)',
          'result = cst_add_import("$file", "$import_stmt")\nprint(result.modified_source)']),
    ],
    "validate_component": _domain("validate_component", "$component_file", [
        "Validate the $component component in $component_file.",
        "Is the $component component in $component_file valid?",
        "Check $component_file for component issues.",
        "What is wrong with the $component component ($component_file)?",
    ]),
    "check_render_tree": [
        (["How many components render in $component_file?",
          "Count the components in the render tree of $component_file."],
         ['result = check_render_tree("$component_file")\nprint(result.component_count)']),
        (["Check the render tree of $component_file.",
          "Inspect the $component render tree in $component_file."],
         ['result = check_render_tree("$component_file")\nprint(result.valid)\n'
          "print(result.issues)"]),
    ],
    "validate_escape_context": _domain("validate_escape_context", "$view_file", [
        "Is the HTML in $view_file escaped correctly?",
        "Check escaping in $view_file.",
        "Look for unsafe interpolation in $view_file.",
        "List the escaping problems in $view_file.",
    ]),
    "validate_service_registration": [
        (["How many services does $service_file register?",
          "Validate the service registrations in $service_file."],
         ['result = validate_service_registration("$service_file")\n'
          "print(result.registration_count, result.valid)"]),
        (["Are the svcs services in $service_file registered properly?",
          "List the registration problems in $service_file."],
         ['result = validate_service_registration("$service_file")\n'
          "for issue in result.issues:\n    print(issue)"]),
    ],
    "check_dependency_graph": [
        (["Find layer violations in $service_file.",
          "Which layers are violated in $service_file?"],
         ['result = check_dependency_graph("$service_file")\nprint(result.layer_violations)']),
        (["Check the dependency graph in $service_file.",
          "Are there dependency cycles in $service_file?"],
         ['result = check_dependency_graph("$service_file")\nprint(result.valid)\n'
          "print(result.issues)"]),
    ],
    "validate_injection_site": _domain("validate_injection_site", "$view_file", [
        "Validate dependency injection in $view_file.",
        "Are the injected parameters in $view_file correct?",
        "Check the injection sites in $view_file.",
        "What injection problems does $view_file have?",
    ]),
    "validate_middleware_chain": _domain("validate_middleware_chain", "$middleware_file", [
        "Validate the middleware chain in $middleware_file.",
        "Is the middleware order in $middleware_file correct?",
        "Check $middleware_file for middleware problems.",
        "List the middleware issues in $middleware_file.",
    ]),
    "check_di_template_binding": _domain("check_di_template_binding", "$view_file", [
        "Validate DI template binding for $view_file.",
        "Do the templates in $view_file bind their services correctly?",
        "Check the template bindings in $view_file.",
        "What binding problems do the templates in $view_file have?",
    ]),
    "validate_route_pattern": _domain("validate_route_pattern", "$route_file", [
        "Validate the URL patterns of $route_file.",
        "Are the routes in $route_file valid?",
        "Are there conflicting routes in $route_file?",
        "List the route problems in $route_file.",
    ]),
}  # fmt: skip

MULTI: list[tuple[list[str], str]] = [
    (["Lint and type-check $path", "Run ruff and the type checker on $path"],
     'lint = ruff_check("$path")\ntypes = typecheck("$path")\n'
     "print(lint.violation_count, types.error_count)"),
    (["Type-check $dir and then run the tests in $tests",
      "Check types in $dir and run $tests"],
     'types = typecheck("$dir")\ntests = pytest_run("$tests")\n'
     "print(types.error_count)\nprint(tests.passed, tests.failed)"),
    (["Show git status and the diff of $dir", "What is modified in $dir and what is the diff?"],
     'status = git_status("$dir")\ndiff = git_diff("$dir", staged=False)\n'
     "print(status.files)\nprint(diff.additions, diff.deletions)"),
    (["Read $file and list its symbols.", "Show $file and outline its functions."],
     'source = read_file("$file")\nsymbols = document_symbols("$file")\n'
     "print(source.line_count)\nprint(symbols.symbols)"),
    (["Validate $component_file and check its escaping.",
      "Check the $component component in $component_file and its HTML escaping."],
     'component = validate_component("$component_file")\n'
     'escaping = validate_escape_context("$component_file")\n'
     "print(component.valid, escaping.valid)\nprint(component.issues + escaping.issues)"),
    (["Validate the services in $service_file and check their dependency graph.",
      "Check registrations and dependency cycles in $service_file."],
     'services = validate_service_registration("$service_file")\n'
     'graph = check_dependency_graph("$service_file")\n'
     "print(services.registration_count, graph.layer_violations)"),
    (["Rename $old to $new in $file and then lint it.",
      "In $file, rename $old to $new and run ruff."],
     'renamed = cst_rename("$file", "$old", "$new")\nlint = ruff_check("$file")\n'
     "print(renamed.rename_count, lint.violation_count)"),
    (["Run the tests in $tests and show the last $count commits.",
      "Run $tests and show recent git history."],
     'tests = pytest_run("$tests")\nlog = git_log(".", count=$count)\n'
     "print(tests.failed)\nprint(log.commits)"),
]  # fmt: skip

# --- direct answers: topics not asked by the suite ---------------------------
# One sentence each: the eval only asks whether the model answers without a
# tool call, and on a laptop CPU every training token costs time.

DIRECT: list[tuple[list[str], str]] = [
    (
        ["What is a Python generator?", "Explain generators in Python.", "How do generators work?"],
        "A generator is a function that uses yield to produce values one at a time.",
    ),
    (
        [
            "What does the GIL do?",
            "Explain the global interpreter lock.",
            "Why does CPython have a GIL?",
        ],
        "The global interpreter lock lets only one thread execute Python bytecode at a time "
        "in CPython.",
    ),
    (
        [
            "What is the difference between git merge and git cherry-pick?",
            "When do I use cherry-pick instead of merge?",
        ],
        "git merge brings over every commit of another branch, while git cherry-pick copies "
        "only the commits you select.",
    ),
    (
        [
            "What is a Protocol in typing?",
            "Explain typing.Protocol.",
            "How does structural typing work in Python?",
        ],
        "A Protocol describes the methods and attributes a type must have.",
    ),
    (
        [
            "What is a context manager?",
            "Explain the with statement.",
            "How do context managers work in Python?",
        ],
        "A context manager defines __enter__ and __exit__, so a with block can set something "
        "up and always clean it up, even when an exception is raised.",
    ),
    (
        ["What does git stash do?", "Explain git stash.", "How do I use git stash?"],
        "git stash saves your uncommitted changes on a stack and restores a clean working tree.",
    ),
    (
        [
            "What is the difference between is and == in Python?",
            "When should I use is instead of ==?",
        ],
        "== compares values by calling __eq__, while is checks that two names refer to the "
        "same object.",
    ),
    (
        [
            "What is a virtual environment?",
            "Why use a virtualenv?",
            "Explain Python virtual environments.",
        ],
        "A virtual environment is an isolated directory with its own interpreter and "
        "installed packages, so each project can pin its own dependency versions without "
        "touching the system Python.",
    ),
    (
        [
            "What are type hints for?",
            "Why add type annotations to Python code?",
            "Do type hints change how Python runs?",
        ],
        "Type hints document expected types; Python does not enforce them, a type checker "
        "reads them.",
    ),
    (
        [
            "What is a fixture in pytest?",
            "Explain pytest fixtures.",
            "How do pytest fixtures work?",
        ],
        "A pytest fixture is a function that prepares something a test needs, such as a "
        "temporary directory or a database.",
    ),
    (
        [
            "What does pytest.mark.parametrize do?",
            "How do I parametrize a test?",
            "Explain parametrized tests.",
        ],
        "pytest.mark.parametrize runs the same test function once for each set of arguments "
        "you list, so one test covers many inputs and each case is reported separately.",
    ),
    (
        [
            "What is the difference between a shallow and a deep copy?",
            "Explain copy versus deepcopy.",
        ],
        "A shallow copy shares the inner objects with the original, while a deep copy copies "
        "them recursively.",
    ),
    (
        ["What is a lambda in Python?", "Explain lambda functions.", "When should I use a lambda?"],
        "A lambda is a small anonymous function written as a single expression, for example "
        "lambda x: x * 2.",
    ),
    (
        [
            "What is __init__.py for?",
            "Why do packages have an __init__.py file?",
            "Explain the role of __init__.py.",
        ],
        "__init__.py marks a directory as a regular package and runs when the package is imported.",
    ),
    (
        [
            "What does git reset --hard do?",
            "Explain git reset --hard.",
            "Is git reset --hard dangerous?",
        ],
        "git reset --hard moves the branch to the given commit and discards all changes in "
        "the index and working tree.",
    ),
    (
        [
            "What is a list comprehension?",
            "Explain list comprehensions.",
            "How do I write a list comprehension?",
        ],
        "A list comprehension builds a list from an iterable in one expression, for example "
        "[x * x for x in items if x > 0].",
    ),
    (
        ["What does *args mean?", "Explain *args and **kwargs.", "How do *args and **kwargs work?"],
        "*args collects extra positional arguments into a tuple and **kwargs collects extra "
        "keyword arguments into a dict.",
    ),
    (
        ["What is ruff?", "Why use ruff instead of flake8?", "Explain what ruff does."],
        "Ruff is a fast Python linter and formatter written in Rust.",
    ),
    (
        [
            "What is an abstract base class?",
            "Explain abc.ABC.",
            "When do I need an abstract base class?",
        ],
        "An abstract base class declares methods with @abstractmethod that subclasses must "
        "implement.",
    ),
    (
        [
            "What is the difference between Optional[int] and int | None?",
            "Is Optional the same as a union with None?",
        ],
        "They mean the same thing: the value is an int or None.",
    ),
    (
        ["What is a git branch?", "Explain branches in git.", "How do git branches work?"],
        "A git branch is a movable pointer to a commit.",
    ),
    (
        ["What is duck typing?", "Explain duck typing in Python."],
        "Duck typing means code cares about what an object can do, not its class: if it has "
        "the methods you call, it works.",
    ),
    (
        ["What does async def do?", "Explain async and await.", "How does asyncio work?"],
        "async def defines a coroutine, and await pauses it until the awaited operation finishes.",
    ),
    (
        [
            "What is a mock in testing?",
            "Explain unittest.mock.",
            "When should I mock a dependency?",
        ],
        "A mock is a stand-in object that records how it is called and returns canned values.",
    ),
    (
        ["What is the difference between a module and a package?", "Explain modules and packages."],
        "A module is a single .py file, while a package is a directory of modules imported "
        "with dotted names.",
    ),
    (
        ["What does git bisect do?", "How do I find which commit introduced a bug?"],
        "git bisect performs a binary search over the history: you mark a good and a bad "
        "commit, test the commits it checks out, and it finds the first bad one.",
    ),
    (
        ["What is a generic type?", "Explain TypeVar.", "How do generics work in Python?"],
        "A generic type is parameterized by another type, like list[int].",
    ),
    (
        [
            "What is the difference between a process and a thread?",
            "Should I use threads or processes in Python?",
        ],
        "Processes have separate memory and run Python code in parallel; threads share memory"
        " and, because of the GIL, mostly help with I/O-bound work.",
    ),
    (
        ["What is an f-string?", "Explain f-strings.", "How do I format strings in Python?"],
        "An f-string is a string literal prefixed with f whose {expressions} are evaluated "
        'and formatted inline, for example f"{name} has {count} items".',
    ),
    (
        ["What does __repr__ do?", "What is the difference between __str__ and __repr__?"],
        "__repr__ returns an unambiguous developer-facing representation, ideally valid "
        "Python; __str__ returns a readable one for users.",
    ),
    (
        ["What is semantic versioning?", "Explain semver."],
        "Semantic versioning numbers releases MAJOR.MINOR.PATCH: breaking changes bump MAJOR,"
        " new backwards-compatible features bump MINOR, and bug fixes bump PATCH.",
    ),
    (
        ["What is a pull request?", "Explain pull requests."],
        "A pull request asks to merge one branch into another.",
    ),
    (
        [
            "What is dependency injection?",
            "Explain dependency injection.",
            "Why use dependency injection?",
        ],
        "Dependency injection means an object receives its collaborators from outside instead"
        " of creating them.",
    ),
    (
        ["What does the walrus operator do?", "Explain :=."],
        "The walrus operator := assigns a value inside an expression, for example in a while "
        "condition.",
    ),
    (
        ["What is a set in Python?", "When should I use a set?"],
        "A set is an unordered collection of unique hashable items with fast membership tests.",
    ),
    (
        [
            "What is the difference between git fetch and git pull?",
            "Explain git fetch versus git pull.",
        ],
        "git fetch downloads new commits without changing your branch, while git pull also "
        "merges them.",
    ),
    (
        ["What is Literal in typing?", "Explain typing.Literal."],
        'Literal restricts a value to specific constants, for example Literal["r", "w"].',
    ),
    (
        ["What is a property in Python?", "Explain the @property decorator."],
        "@property turns a method into a read-only attribute computed on access.",
    ),
    (
        ["What is an enum?", "Explain enum.Enum."],
        "An Enum defines a fixed set of named constants.",
    ),
    (
        ["What does pip freeze do?", "What is a lock file?"],
        "A lock file records the exact version of every installed dependency, so the same "
        "environment can be recreated later; pip freeze prints such a list.",
    ),
    (
        ["What is a closure?", "Explain closures in Python."],
        "A closure is an inner function that remembers variables from the enclosing "
        "function's scope, even after that function has returned.",
    ),
    (
        ["What is code coverage?", "Explain test coverage."],
        "Code coverage measures which lines or branches run during the tests.",
    ),
    (
        ["What is a CST?", "What is the difference between an AST and a CST?"],
        "An abstract syntax tree keeps only the structure of the code, while a concrete "
        "syntax tree also keeps whitespace and comments, so tools like LibCST can rewrite "
        "code without losing formatting.",
    ),
    (
        ["What is the difference between git tag and git branch?", "Explain git tags."],
        "A tag is a fixed name for one commit, while a branch moves as you commit.",
    ),
    (
        ["What does the LSP do?", "Explain the language server protocol."],
        "The language server protocol lets an editor ask a separate server for definitions, "
        "references, hovers and diagnostics, so one server serves many editors.",
    ),
    (
        ["What is a race condition?", "Explain race conditions."],
        "A race condition happens when the result depends on the timing of concurrent "
        "operations on shared state.",
    ),
    (
        ["What is a docstring?", "How should I write docstrings?"],
        "A docstring is a string literal at the start of a module, class or function that "
        "documents it.",
    ),
    (
        ["What does Final mean in typing?", "Explain typing.Final."],
        "Final marks a name that must not be reassigned or overridden.",
    ),
    (
        [
            "What is a namedtuple?",
            "Explain collections.namedtuple.",
            "When is a namedtuple useful?",
        ],
        "A namedtuple is a tuple subclass whose fields also have names, so point.x reads "
        "better than point[0].",
    ),
    (
        [
            "What does git revert do?",
            "How is git revert different from git reset?",
            "Explain git revert.",
        ],
        "git revert creates a new commit that undoes an earlier commit, so history is kept.",
    ),
    (
        [
            "What is a dict comprehension?",
            "Explain dict comprehensions.",
            "How do I build a dict in one expression?",
        ],
        "A dict comprehension builds a dictionary from an iterable, for example {name: "
        "len(name) for name in names}.",
    ),
    (
        [
            "What is the difference between return and yield?",
            "When do I use yield?",
            "Explain yield versus return.",
        ],
        "return ends the function with one value, while yield pauses it and turns the "
        "function into a generator.",
    ),
    (
        [
            "What is the purpose of if __name__ == '__main__'?",
            "Explain the __main__ check.",
            "Why do scripts check __name__?",
        ],
        "The check is true only when the file runs as a script, not when it is imported, so "
        "code under it does not run on import.",
    ),
    (
        ["What is a callable in Python?", "Explain callables.", "What makes an object callable?"],
        "A callable is anything you can call with parentheses: functions, classes, methods, "
        "and objects whose class defines __call__.",
    ),
    (
        [
            "What is git rebase --interactive for?",
            "How do I squash commits?",
            "Explain squashing commits.",
        ],
        "Squashing combines several commits into one, usually with an interactive rebase.",
    ),
    (
        [
            "What is monkeypatching?",
            "Explain pytest monkeypatch.",
            "When should I use monkeypatch in tests?",
        ],
        "Monkeypatching replaces an attribute, environment variable or function for the "
        "duration of a test.",
    ),
    (
        [
            "What is __slots__?",
            "Explain __slots__ in Python.",
            "Why would a class define __slots__?",
        ],
        "__slots__ lists the attributes instances may have, so Python skips the per-instance "
        "__dict__.",
    ),
    (
        ["What is a type alias?", "Explain type aliases.", "How do I name a complex type?"],
        "A type alias gives a long type a short name, for example type UserMap = dict[str, User].",
    ),
    (
        ["What does the nonlocal keyword do?", "Explain nonlocal."],
        "nonlocal lets an inner function assign to a variable of the enclosing function "
        "instead of creating a new local variable.",
    ),
    (
        [
            "What is a wheel?",
            "Explain Python wheels.",
            "What is the difference between a wheel and an sdist?",
        ],
        "A wheel is a built package archive that installs by unpacking, without running a "
        "build step.",
    ),
]


def _placeholders(template: str) -> set[str]:
    return {m.group("named") or m.group("braced") for m in Template.pattern.finditer(template)} - {
        None
    }


def _check_groups() -> None:
    """A prompt must name what its code acts on (a column number it may leave out)."""
    groups = [g for groups in TOOLS.values() for g in groups]
    groups += [(prompts, [code]) for prompts, code in MULTI]
    for prompts, codes in groups:
        for prompt in prompts:
            for code in codes:
                missing = (
                    _placeholders(code)
                    - _placeholders(prompt)
                    - {"col", "line", "count", "pattern"}
                )
                assert not missing, f"{prompt!r} does not mention {missing} used by {code!r}"


def _code_block(code: str, suite: EvalSuite) -> str:
    """The Code-Mode call of `code`, checked both ways: the preflight API check finds
    nothing in the code, and the scorer's parser reads back exactly this call."""
    problems = code_api_problems(code, suite)
    assert not problems, f"{problems} in:\n{code}"
    block = code_mode.render_code(code)
    calls = formats.find_calls(block, suite.tool_names)
    wrappers = [c for c in calls if c.syntax == "xml" and c.name == code_mode.WRAPPER]
    assert len(wrappers) == 1 and code_mode.code_argument(wrappers[0].arguments) == code, block
    return block


def _chat(system: str, prompt: str, answer: str) -> dict[str, list[dict[str, str]]]:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ]
    }


def _multi_for(suite: EvalSuite) -> list[tuple[list[str], str]]:
    """The multi-tool templates that call only tools of this suite."""
    tools = set(suite.tool_names)
    return [
        (p, code) for p, code in MULTI if set(re.findall(r"(\w+)\(", code)) <= tools | {"print"}
    ]


def make_examples(
    suite: EvalSuite, rng: random.Random, per_tool: int = N_SINGLE_PER_TOOL, n_multi: int = N_MULTI
) -> list[dict]:
    held_out = {p.prompt.strip().lower() for p in suite.prompts}
    seen: set[str] = set()
    examples: list[dict] = []

    def add(prompt_template: str, answer: str, names: dict[str, str]) -> bool:
        prompt = Template(prompt_template).substitute(names)
        key = prompt.strip().lower()
        if key in seen or key in held_out:
            return False
        seen.add(key)
        examples.append(_chat(suite.system_prompt, prompt, answer))
        return True

    def add_tool_example(groups: list[Group]) -> bool:
        for _ in range(200):  # retry until a prompt not seen before comes up
            prompts, codes = rng.choice(groups)
            names = _pick(rng)
            code = Template(rng.choice(codes)).substitute(names)
            if add(rng.choice(prompts), _code_block(code, suite), names):
                return True
        return False  # this tool's prompts are used up

    multi = _multi_for(suite)
    for tool_name in suite.tool_names:
        for _ in range(per_tool):
            if not add_tool_example(TOOLS[tool_name]):
                break
    for i in range(n_multi if multi else 0):
        prompts, code = multi[i % len(multi)]
        if not add_tool_example([(prompts, [code])]):
            raise RuntimeError(f"cannot find a new prompt among {prompts}")
    for questions, answer in DIRECT:
        for question in questions:
            assert add(question, answer, {}), question
    return examples


def main(out: Path = OUT, flavor: str = "code_mode") -> None:
    chosen = FLAVORS[flavor]
    suite = load_suite(chosen.suite)
    assert set(suite.tool_names) <= set(TOOLS), "every tool of the API needs templates"
    _check_groups()
    rng = random.Random(SEED)
    examples = make_examples(suite, rng, chosen.per_tool, chosen.n_multi)
    rng.shuffle(examples)
    n_valid = round(len(examples) * VALID_SHARE)
    splits = {"valid": examples[:n_valid], "train": examples[n_valid:]}
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (out / f"{name}.jsonl").write_text(text, encoding="utf-8", newline="\n")
    n_tool = sum("<tool_call>" in e["messages"][-1]["content"] for e in examples)
    print(
        f"wrote {len(splits['train'])} train + {len(splits['valid'])} valid examples "
        f"to {out} ({n_tool / len(examples):.0%} tool calls)"
    )


if __name__ == "__main__":
    # `make_demo_data.py` writes data/datasets/code_mode; `make_demo_data.py core`
    # writes data/datasets/core for the five-tool suite data/evals/core.yaml.
    name = sys.argv[1] if len(sys.argv) > 1 else "code_mode"
    main(FLAVORS[name].out, name)
