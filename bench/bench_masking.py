"""Personal-data masking: precision and recall on the labelled corpus, and what masking costs.

    python bench/bench_masking.py            # all three parts (~2 min)
    python bench/bench_masking.py --corpus   # the corpus and checksum tables only (~10 s)
    python bench/bench_masking.py --cost     # in-process cost per result (~1 min)
    python bench/bench_masking.py --e2e      # added latency per tools/call through a stdio proxy (~1 min)
    python bench/bench_masking.py --quick    # fewer samples

1. The corpus (tests/pii_corpus): per kind, how many labelled identifiers are masked, and how many
   hard negatives (document numbers, КПП, ОГРН, barcodes, sums, numbers passing a checksum by
   chance) each kind alone wrongly masks; then how often random digit runs pass each checksum,
   which is why the weak ones need a label. Full names (`names`) too, against their own hard
   negatives (organisations, streets, cities, positions, products), when natasha is installed.
2. The cost of `Masker.mask_call_result` per result, every kind on versus none, for typical results;
   and `all,names` versus `all`, with the recogniser's load time, when natasha is installed.
3. The added p50 per tools/call through a real `python -m py_server stdio` proxy, MCP_MASK_PII=all
   versus off (and all,names, with natasha), against the demo 1C emulator; "n/a" while the proxy
   does not mask yet (no `_meta["onec-mcp-proxy/masked"]` in the result).
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import types

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.pii_corpus

from tests.pii_corpus import load_corpus, score

from py_server.config import NAMES_KIND, PII_KINDS
from py_server.demo import onec_data
from py_server.demo.onec_emulator import OneCEmulator
from py_server.masking import (
    MASKED_META_KEY,
    Masker,
    account_key_valid,
    card_valid,
    inn_valid,
    masked_counts,
    snils_valid,
)
from py_server.masking_names import extra_installed

NO_NATASHA = 'names: natasha not installed (pip install "onec-mcp-proxy[pii-names]")'

REPORT_BYTES = 100_000
CHANCE_SAMPLES = 100_000
E2E_TOOLS = ("get_metadata", "list_staff")  # no personal data; the most of it

# --- 1. the corpus --------------------------------------------------------------------------


def corpus_table() -> list[str]:
    report = score()
    header = f"{'kind':<10}{'identifiers':>12}{'caught':>8}{'recall':>8}   wrongly masked negatives (this kind alone)"
    lines = [header, "-" * len(header)]
    for kind in PII_KINDS:
        figures = report.kinds[kind]
        lines.append(
            f"{kind:<10}{figures.identifiers:>12}{figures.caught:>8}{figures.recall:>8.0%}   "
            f"{figures.false_positives} of {figures.negatives}"
        )
    total = sum(figures.identifiers for figures in report.kinds.values())
    caught = sum(figures.caught for figures in report.kinds.values())
    lines.append(
        f"{'all':<10}{total:>12}{caught:>8}{caught / total:>8.0%}   {report.false_positives} of {report.negatives}"
    )
    lines.append(f"text masked that no label names (all kinds on): {report.unexpected}")
    lines += [f"  missed: {document}: {kind} {value}" for document, kind, value in report.missed]
    lines += [f"  wrongly masked: {document}: {what} {value}" for document, what, value in report.wrongly_masked]
    return [*lines, "", *names_lines()]


def names_lines() -> list[str]:
    """Full names over the corpus, with every kind on: the figures of the names row of the README."""
    if not extra_installed():
        return [NO_NATASHA]
    report = score(kinds=(*PII_KINDS, NAMES_KIND))
    names = report.kinds[NAMES_KIND]
    lines = [
        f"names (all,names): {names.caught} of {names.identifiers} full names caught (recall {names.recall:.0%}); "
        f"{names.false_positives} of {names.negatives} name-like negatives wrongly masked; "
        f"{names.unexpected} of {names.tags} name tags mask no labelled name (precision {names.precision:.0%})"
    ]
    lines += [f"  missed: {document}: {value}" for document, kind, value in report.missed if kind == NAMES_KIND]
    lines += [f"  wrongly masked: {document}: {what} {value}" for document, what, value in report.wrongly_masked]
    return lines


def chance_table(samples: int) -> list[str]:
    """How often random digit runs pass each check alone: what a label has to make up for."""
    rng = random.Random(152)

    def digits(count: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(count))

    checks: list[tuple[str, Callable[[], bool]]] = [
        ("ИНН, 10 digits (one check digit)", lambda: inn_valid(digits(10))),
        ("ИНН, 12 digits (two check digits)", lambda: inn_valid(digits(12))),
        ("СНИЛС, 11 digits (check number)", lambda: snils_valid(digits(11))),
        ("card, 16 digits (Luhn and a network prefix)", lambda: card_valid(digits(16))),
        ("account, 20 digits, against one BIC", lambda: account_key_valid(digits(20), "044525974")),
    ]
    lines = [f"random digit runs passing the check alone ({samples} each):"]
    lines += [f"  {name:<46}{sum(check() for _ in range(samples)) / samples:>7.2%}" for name, check in checks]
    ten_digit = [
        value for document in load_corpus() for _, value in document.negatives if value.isdigit() and len(value) == 10
    ]
    passing = [value for value in ten_digit if inn_valid(value)]
    lines.append(
        f"10-digit negatives of the corpus passing the ИНН check: {len(passing)} of {len(ten_digit)}; "
        "each would be masked if a 10-digit ИНН needed no label"
    )
    return lines


# --- 2. in-process cost ---------------------------------------------------------------------


def report_text(rows_with_inn: bool) -> str:
    """A 1C report of about 100 KB: a sales register, with or without an ИНН column."""
    inn_column = " ИНН |" if rows_with_inn else ""
    header = f"Дата | Документ | Контрагент |{inn_column} Номенклатура | Количество | Сумма"
    lines = [header]
    counterparties = onec_data.COUNTERPARTY_DETAILS
    row = 0
    while sum(len(line) + 1 for line in lines) < REPORT_BYTES:
        sale = onec_data.SALES[row % len(onec_data.SALES)]
        inn = f" | {counterparties[row % len(counterparties)].inn}" if rows_with_inn else ""
        lines.append(
            f"{sale.date:%d.%m.%Y} | {sale.number} | {sale.counterparty}{inn} | {sale.product} | "
            f"{sale.quantity:g} | {onec_data.money(sale.amount)}"
        )
        row += 1
    return "\n".join(lines)


def typical_results() -> dict[str, types.CallToolResult]:
    card = onec_data.get_counterparty({"name": "Ромашка"})
    return {
        "small text, no identifiers (get_metadata)": onec_data.get_metadata({}),
        "counterparty card, text only": onec_data.text_result(card["content"][0]["text"]),
        "counterparty card, text + structured": card,
        "staff list (6), text + structured": onec_data.list_staff({}),
        "100 KB report, an ИНН in every row": onec_data.text_result(report_text(True)),
        "100 KB report, no identifiers": onec_data.text_result(report_text(False)),
    }  # type: ignore[return-value]


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def time_each(work: Callable[[], Any], runs: int) -> list[float]:
    """Microseconds per call of `work`, after a few warm-up calls."""
    for _ in range(min(runs, 20)):
        work()
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        work()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def cost_table(quick: bool) -> list[str]:
    everything, nothing = Masker(PII_KINDS), Masker([])
    header = f"{'result':<44}{'size':>9}{'masked':>8}{'none p50':>10}{'all p50':>10}{'all p95':>10}  (µs)"
    lines = [header, "-" * len(header)]
    for name, raw in typical_results().items():
        result = types.CallToolResult.model_validate(raw)
        size = len(result.model_dump_json(by_alias=True))
        runs = (30 if quick else 200) if size > 50_000 else (300 if quick else 3000)
        off = time_each(lambda result=result: nothing.mask_call_result(result), runs)
        on = time_each(lambda result=result: everything.mask_call_result(result), runs)
        count = sum(masked_counts(everything.mask_call_result(result)).values())
        lines.append(
            f"{name:<44}{size:>8,}B{count:>8}{percentile(off, 50):>10.1f}{percentile(on, 50):>10.1f}"
            f"{percentile(on, 95):>10.1f}"
        )
    return [*lines, "", *names_cost_table(quick)]


def load_seconds() -> float:
    """What `all,names` adds to start-up, in a fresh process: this one may have the models loaded already."""
    script = (
        "import time; started = time.perf_counter(); from py_server.masking import Masker; "
        "Masker(['names']); print(time.perf_counter() - started)"
    )
    # The import of masking without names, measured the same way, is not part of the cost.
    baseline = "import time; started = time.perf_counter(); from py_server.masking import Masker; Masker(['all']); "
    baseline += "print(time.perf_counter() - started)"
    with_names, without = (
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for code in (script, baseline)
    )
    return with_names - without


def names_cost_table(quick: bool) -> list[str]:
    """`all,names` against `all`, each call on a result the recogniser has not seen: a masker caches what
    it found in short strings, so the same result again would cost almost nothing."""
    if not extra_installed():
        return [NO_NATASHA]
    lines = [f"names: {load_seconds():.2f} s to import natasha and load its models, once per process (at start-up)"]
    everything, with_names = Masker(PII_KINDS), Masker([*PII_KINDS, NAMES_KIND])
    finder = with_names._names
    assert finder is not None

    def unseen(result: types.CallToolResult) -> types.CallToolResult:
        finder.forget()
        return with_names.mask_call_result(result)

    header = f"{'result':<44}{'names':>8}{'all p50':>10}{'+names p50':>12}{'+names p95':>12}{'added p50':>11}  (µs)"
    lines += [header, "-" * len(header)]
    for name, raw in typical_results().items():
        result = types.CallToolResult.model_validate(raw)
        large = len(result.model_dump_json(by_alias=True)) > 50_000
        runs = (3 if quick else 10) if large else (30 if quick else 200)
        off = time_each(lambda result=result: everything.mask_call_result(result), runs)
        on = time_each(lambda result=result: unseen(result), runs)
        count = masked_counts(unseen(result)).get(NAMES_KIND, 0)
        lines.append(
            f"{name:<44}{count:>8}{percentile(off, 50):>10.0f}{percentile(on, 50):>12.0f}{percentile(on, 95):>12.0f}"
            f"{percentile(on, 50) - percentile(off, 50):>+11.0f}"
        )
    return lines


# --- 3. end to end --------------------------------------------------------------------------


async def e2e_p50(mask_pii: str, requests: int, emulator: OneCEmulator, workdir: str, errlog: Any) -> dict[str, Any]:
    """p50 ms per tools/call of each E2E tool through a stdio proxy; whether its results carry masking counts."""
    from bench_proxy import Context, mcp_session, proxy_settings  # the bench's own helpers, same folder

    ctx = Context(emulator, errlog, workdir, False, {})
    settings = proxy_settings(emulator, mask_pii=mask_pii)
    figures: dict[str, Any] = {}
    async with mcp_session("stdio", settings, ctx) as session:
        for tool in E2E_TOOLS:
            samples: list[float] = []
            result = None
            for attempt in range(requests + requests // 5):
                started = time.perf_counter()
                result = await session.call_tool(tool, {})
                if attempt >= requests // 5:  # the first fifth warms up
                    samples.append((time.perf_counter() - started) * 1000)
                if result.is_error:
                    raise RuntimeError(f"{tool} failed through the proxy: {result.content}")
            figures[tool] = percentile(samples, 50)
            figures[f"{tool}/masked"] = bool(result and result.meta and MASKED_META_KEY in result.meta)
    return figures


async def e2e_cells(
    requests: int, emulator: OneCEmulator, workdir: str, errlog: Any, settings: tuple[str, ...]
) -> list[dict[str, Any]]:
    return [await e2e_p50(mask_pii, requests, emulator, workdir, errlog) for mask_pii in settings]


def e2e_lines(requests: int) -> list[str]:
    from bench_proxy import clean_environment

    with (
        clean_environment(),
        OneCEmulator() as emulator,
        tempfile.TemporaryDirectory(prefix="bench-masking-") as workdir,
        open(Path(workdir) / "proxy-stderr.log", "w+", encoding="utf-8") as errlog,
    ):
        # The stdio proxy is a subprocess of this Python: all,names needs natasha here too.
        settings = ("", "all", f"all,{NAMES_KIND}") if extra_installed() else ("", "all")
        try:
            off, on, *names = anyio.run(e2e_cells, requests, emulator, workdir, errlog, settings, backend="asyncio")
        except Exception as exc:  # the lead's integration may be half-way: say why, and go on
            errlog.seek(0)
            return [f"n/a: {type(exc).__name__}: {exc}", errlog.read()[-2000:]]
    header = f"{'tool':<16}{'off p50 ms':>12}{'all p50 ms':>12}{'added':>10}"
    lines = [header + (f"{'all,names p50 ms':>18}{'added':>10}" if names else "")]
    for tool in E2E_TOOLS:
        added = f"{on[tool] - off[tool]:+.2f}" if on["list_staff/masked"] else "n/a"
        line = f"{tool:<16}{off[tool]:>12.2f}{on[tool]:>12.2f}{added:>10}"
        if names:  # a stdio proxy keeps its masker, so a repeated result costs the recogniser nothing after the first
            line += f"{names[0][tool]:>18.2f}{names[0][tool] - off[tool]:>+10.2f}"
        lines.append(line)
    if not on["list_staff/masked"]:
        lines.append("n/a: the proxy returned list_staff without _meta masking counts (masking not integrated yet)")
    if not names:
        lines.append(NO_NATASHA)
    return lines


# --- main -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--corpus", action="store_true", help="the corpus table")
    parser.add_argument("--cost", action="store_true", help="in-process cost per result")
    parser.add_argument("--e2e", action="store_true", help="added latency through a stdio proxy")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    if not (args.corpus or args.cost or args.e2e):
        args.corpus = args.cost = args.e2e = True
    return args


def main() -> None:
    args = parse_args()
    sections: list[tuple[str, Callable[[], list[str]]]] = []
    if args.corpus:
        sections.append(("corpus (tests/pii_corpus), every kind on", corpus_table))
        sections.append(("checksums alone", lambda: chance_table(10_000 if args.quick else CHANCE_SAMPLES)))
    if args.cost:
        title = "in-process cost of Masker.mask_call_result, all kinds vs none"
        sections.append((title, lambda: cost_table(args.quick)))
    if args.e2e:
        requests = 100 if args.quick else 400
        title = f"end to end: tools/call through `python -m py_server stdio`, {requests} calls per cell"
        sections.append((title, lambda: e2e_lines(requests)))
    for title, section in sections:
        print(f"\n== {title}")
        print("\n".join(section()))


if __name__ == "__main__":
    main()
