"""How sure the farm is: intervals, verdicts and seed counts, from seed scores.

Seeds are the unit of replication. A seed's adherence is already an average
over the suite's prompts, and those prompts are not independent trials (they
share one trained adapter: a seed that locked the format passes most of them,
one that did not fails most), so every interval here is computed from the seed
scores, never from prompt counts. Earlier runs scored 82%, 39% and 22% with
one config: a binomial interval over 3 × 27 prompts would claim ±10 points
where the seeds disagree by 60.

- **Interval of a mean**: Student's t on the seed scores (n − 1 degrees of
  freedom), clipped to [0, 1]. With 2 or 3 seeds the t quantile (12.7, 4.3)
  makes the interval as wide as the data allow, which is the honest answer; a
  bootstrap over 3 seeds would be far too narrow. One seed gives no spread, so
  its interval is the whole scale.
- **Two configurations**: Welch's t-test on the two sets of seed scores (no
  equal-spread assumption). When both were trained with the same seeds and
  there are at least PAIRED_MIN_SEEDS of them, a paired t-test on the per-seed
  differences instead: the same seed gives both runs the same LoRA
  initialisation and data order, and pairing removes that shared part of the
  noise. Pairing costs degrees of freedom (n − 1 instead of about 2n − 2): with
  3 seeds its t quantile is 4.30 against Welch's 2.78, so it only pays when
  same-seed runs correlate above about 0.6, which a changed learning rate or
  rank rarely leaves; at 8 seeds (2.36 against 2.14) a correlation above about
  0.2 pays for it. Both tests keep their 5% false-alarm rate whatever the
  correlation (a positive one makes Welch cautious, never bold).
- **Seeds needed**: the smallest number of seeds per configuration at which
  the same test would find the observed gap with 80% power at the 95% level,
  from the observed seed spread (a planning figure, not a promise: with few
  seeds the spread itself is uncertain).
- **seed-lock@k**: τ-bench's pass^k with seeds as trials. Per prompt, with c of
  n seeds right, C(c, k) / C(n, k) is the chance that k seeds drawn from these
  all get it right; averaged over prompts.

Pure functions: scores in, numbers and sentences out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

CONFIDENCE = 0.95
POWER = 0.80
MAX_SEEDS = 1000  # the submit limit: no plan beyond what the farm would accept
PAIRED_MIN_SEEDS = 8  # shared seeds from which a paired test is used (module docstring)

# --- Student's t, without a numerical library at run time ------------------------


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # fmt: skip
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 3e-16:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T ≤ t) = p (bisection on `t_cdf`, to 1e-10)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-10:
            break
    return (low + high) / 2.0


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample variance (n − 1)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
    return mean, var


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def points(value: float) -> str:
    """0.172 → '+17'; adherence differences are read in points."""
    return f"{100 * value:+.0f}"


# --- one configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """Mean adherence across seeds with its interval (t on the seed scores)."""

    mean: float
    low: float
    high: float
    seeds: int
    confidence: float = CONFIDENCE

    def text(self) -> str:
        """'52% [31, 73] · 3 seeds'."""
        seeds = f"{self.seeds} seed{'s' if self.seeds != 1 else ''}"
        return f"{self.mean:.0%} [{100 * self.low:.0f}, {100 * self.high:.0f}] · {seeds}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_interval(scores: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of `scores` (one per seed) and its t interval, clipped to [0, 1].
    One seed says nothing of the spread: its interval is the whole scale."""
    if not scores:
        raise ValueError("no seed scores")
    n = len(scores)
    mean, var = _mean_var(scores)
    if n == 1:
        return Interval(mean, 0.0, 1.0, 1, confidence)
    half = t_quantile((1 + confidence) / 2, n - 1) * math.sqrt(var / n)
    return Interval(mean, _clip(mean - half), _clip(mean + half), n, confidence)


# --- two configurations --------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A − B in adherence, its interval, and what it allows one to say."""

    a: str
    b: str
    mean_a: float
    mean_b: float
    seeds_a: int
    seeds_b: int
    difference: float | None  # mean A − mean B (paired: mean of the per-seed differences)
    low: float | None
    high: float | None
    p_value: float | None
    method: str  # "paired t" | "Welch t" | "none"
    better: str | None  # a's or b's label when the interval excludes 0
    confidence: float = CONFIDENCE

    @property
    def shown(self) -> bool:
        return self.better is not None

    def text(self) -> str:
        """'A is better (95%): +17 points [+3, +31], paired t over 3 seeds' or
        'no difference shown with 3 + 3 seeds: +17 points [-8, +42]'."""
        level = f"{self.confidence:.0%}"
        if self.difference is None or self.low is None or self.high is None:
            return (
                f"no verdict between {self.a} and {self.b}: each needs at least 2 seeds "
                f"(has {self.seeds_a} + {self.seeds_b})"
            )
        gap = f"{points(self.difference)} points [{points(self.low)}, {points(self.high)}]"
        how = (
            f"paired t over {self.seeds_a} seeds"
            if self.method == "paired t"
            else f"Welch t, {self.seeds_a} + {self.seeds_b} seeds"
        )
        if self.better is None:
            return (
                f"no difference shown between {self.a} and {self.b} with "
                f"{self.seeds_a} + {self.seeds_b} seeds: {gap} ({level}, {how})"
            )
        worse = self.b if self.better == self.a else self.a
        return f"{self.better} is better than {worse} ({level}): {gap}, {how}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shown": self.shown, "text": self.text()}


def compare_seeds(
    a: Mapping[int, float],
    b: Mapping[int, float],
    labels: tuple[str, str] = ("A", "B"),
    confidence: float = CONFIDENCE,
) -> Verdict:
    """A's and B's seed scores ({seed: adherence}) → the verdict on A − B.

    Paired on the seeds when both sets of seeds are the same and number at least
    PAIRED_MIN_SEEDS, Welch otherwise (see the module's docstring)."""
    name_a, name_b = labels
    xa, xb = list(a.values()), list(b.values())
    na, nb = len(xa), len(xb)
    mean_a = sum(xa) / na if na else math.nan
    mean_b = sum(xb) / nb if nb else math.nan
    none = Verdict(name_a, name_b, mean_a, mean_b, na, nb, None, None, None, None, "none", None,
                   confidence)  # fmt: skip
    if na < 2 or nb < 2:
        return none
    alpha_half = (1 - confidence) / 2
    if set(a) == set(b) and na >= PAIRED_MIN_SEEDS:
        method = "paired t"
        diffs = [a[s] - b[s] for s in sorted(a)]
        diff, var = _mean_var(diffs)
        se, df = math.sqrt(var / na), na - 1.0
    else:
        method = "Welch t"
        (ma, va), (mb, vb) = _mean_var(xa), _mean_var(xb)
        diff = ma - mb
        ea, eb = va / na, vb / nb
        se = math.sqrt(ea + eb)
        df = (ea + eb) ** 2 / (ea**2 / (na - 1) + eb**2 / (nb - 1)) if se > 0 else na + nb - 2.0
    if se == 0:  # every seed agreed exactly: any gap is all there is
        low = high = diff
        p_value = 0.0 if diff != 0 else 1.0
    else:
        half = t_quantile(1 - alpha_half, df) * se
        # adherence lies in [0, 1], so no difference is outside ±1
        low, high = max(diff - half, -1.0), min(diff + half, 1.0)
        p_value = 2 * (1 - t_cdf(abs(diff) / se, df))
    better = name_a if low > 0 else name_b if high < 0 else None
    return Verdict(name_a, name_b, mean_a, mean_b, na, nb, diff, low, high, p_value, method,
                   better, confidence)  # fmt: skip


def unpaired(a: Sequence[float], b: Sequence[float]) -> tuple[dict[int, float], dict[int, float]]:
    """Scores with no seed to pair them by (pooled over a sweep's other knobs) as
    mappings with disjoint keys, so `compare_seeds` and `seeds_needed` use Welch."""
    return dict(enumerate(a)), {len(a) + i: x for i, x in enumerate(b)}


# --- how many seeds would settle it ----------------------------------------------------


@dataclass(frozen=True)
class SeedPlan:
    """Seeds per configuration that would find the observed gap with `power`."""

    per_config: int | None  # None: the gap is zero or the spread unknown
    more_a: int
    more_b: int
    gap: float
    spread: float  # the seed standard deviation (paired: of the per-seed differences)
    settled: bool  # the verdict already shows a difference
    power: float = POWER

    def text(self, a: str = "A", b: str = "B") -> str:
        if self.settled:
            return f"{a} against {b} is settled with the seeds run so far"
        if self.per_config is None:
            return (
                f"{a} and {b} score the same so far: no number of seeds would tell them apart "
                "unless their spread shows a gap"
            )
        if self.more_a == 0 and self.more_b == 0:
            return (
                f"the seeds run so far should have shown a {abs(100 * self.gap):.0f}-point gap "
                f"between {a} and {b} with {self.power:.0%} power: the real gap is likely smaller"
            )
        more = (
            f"{self.more_a} more each"
            if self.more_a == self.more_b
            else f"{self.more_a} more for {a}, {self.more_b} more for {b}"
        )
        capped = " (the farm's limit)" if self.per_config >= MAX_SEEDS else ""
        return (
            f"about {self.per_config} seeds per configuration{capped} ({more}) would tell {a} "
            f"from {b} with {self.power:.0%} power, if the {abs(100 * self.gap):.0f}-point gap "
            "is real"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _power(gap: float, spread: float, n: int, paired: bool, confidence: float) -> float:
    """Power of the two-sided t-test at n seeds per configuration (normal shift on
    the t critical value: close to the noncentral t for planning)."""
    if paired:
        se, df = spread / math.sqrt(n), n - 1
    else:
        se, df = spread * math.sqrt(2.0 / n), 2 * n - 2
    critical = t_quantile(1 - (1 - confidence) / 2, df)
    return NormalDist().cdf(abs(gap) / se - critical)


def seeds_needed(
    a: Mapping[int, float],
    b: Mapping[int, float],
    power: float = POWER,
    confidence: float = CONFIDENCE,
) -> SeedPlan:
    """How many seeds per configuration would tell A from B, from their seed spread."""
    verdict = compare_seeds(a, b, confidence=confidence)
    na, nb = len(a), len(b)
    paired = verdict.method == "paired t"
    if paired:
        diffs = [a[s] - b[s] for s in sorted(a)]
        gap, var = _mean_var(diffs)
    else:
        (ma, va), (mb, vb) = _mean_var(list(a.values())), _mean_var(list(b.values()))
        gap = ma - mb
        var = ((na - 1) * va + (nb - 1) * vb) / (na + nb - 2) if na + nb > 2 else math.nan
    spread = math.sqrt(var) if not math.isnan(var) else math.nan
    if verdict.shown:
        return SeedPlan(max(na, nb), 0, 0, gap, spread, True, power)
    if gap == 0 or math.isnan(spread) or spread == 0:
        return SeedPlan(None, 0, 0, gap, 0.0 if math.isnan(spread) else spread, False, power)
    # Power grows with n: bisect for the smallest n that reaches it (a page shows
    # this for every comparison, and each power is a t quantile).
    low, high = (PAIRED_MIN_SEEDS if paired else 2), MAX_SEEDS
    if _power(gap, spread, low, paired, confidence) >= power:
        high = low
    while high - low > 1:
        middle = (low + high) // 2
        if _power(gap, spread, middle, paired, confidence) >= power:
            high = middle
        else:
            low = middle
    n = high
    return SeedPlan(n, max(0, n - na), max(0, n - nb), gap, spread, False, power)


# --- agreement between seeds per prompt ------------------------------------------------


def seed_lock_at_k(passes: Sequence[Iterable[str]], prompts: int, k: int) -> float | None:
    """pass^k with seeds as trials: `passes` holds, per seed, the ids of the prompts
    it got right; `prompts` is the suite's size. None when fewer than k seeds."""
    n = len(passes)
    if k < 1 or n < k or prompts <= 0:
        return None
    right: dict[str, int] = {}
    for seed_passes in passes:
        for prompt in set(seed_passes):
            right[prompt] = right.get(prompt, 0) + 1
    # prompts no seed got right (or fewer than k did) add C(c, k) = 0
    total = sum(math.comb(c, k) for c in right.values())
    return total / (math.comb(n, k) * prompts)


def seed_locks(passes: Sequence[Iterable[str]], prompts: int, up_to: int = 3) -> dict[int, float]:
    """seed-lock@1 … @up_to (as many as there are seeds for)."""
    out = {}
    for k in range(1, up_to + 1):
        value = seed_lock_at_k(passes, prompts, k)
        if value is not None:
            out[k] = value
    return out


@dataclass
class FragilePrompt:
    """A prompt some seeds got right and others did not, with each seed's label."""

    prompt_id: str
    right: int
    seeds: int
    labels: dict[int, str] = field(default_factory=dict)  # seed → label

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fragile_prompts(
    results: Iterable[tuple[int, str, str, float]], full_score: float = 1.0
) -> list[FragilePrompt]:
    """(seed, prompt id, label, score) rows → the prompts right in some seeds and
    wrong in others, the most evenly split first (where more data helps most)."""
    by_prompt: dict[str, dict[int, tuple[str, bool]]] = {}
    for seed, prompt_id, label, score in results:
        by_prompt.setdefault(prompt_id, {})[seed] = (label, score >= full_score)
    fragile = []
    for prompt_id, seeds in by_prompt.items():
        right = sum(ok for _, ok in seeds.values())
        if 0 < right < len(seeds):
            labels = {seed: label for seed, (label, _) in sorted(seeds.items())}
            fragile.append(FragilePrompt(prompt_id, right, len(seeds), labels))
    fragile.sort(key=lambda f: (abs(f.right / f.seeds - 0.5), f.prompt_id))
    return fragile
