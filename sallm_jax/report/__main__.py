"""`python -m sallm_jax.report WORKDIR [WORKDIR ...]` (see `sallm_jax.report`)."""

from __future__ import annotations

import argparse
import pathlib

from sallm_jax.report import write_report

EXAMPLE = """examples:
  python -m sallm_jax.report runs/sqa_grpo
      plots in runs/sqa_grpo/plots/, the report in runs/sqa_grpo/report.md
  python -m sallm_jax.report runs/gvs_sqa
      every run of a grpo_vs_sft directory, curves overlaid
  python -m sallm_jax.report runs/a runs/b --out runs/a_vs_b
"""


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE,
        description="Write PNG plots of every training scalar (several runs overlaid) and a "
                    "report.md with the results table, sample GRPO groups, test answers, the "
                    "config's difference from its preset, timings and skipped inputs.")
    p.add_argument("workdirs", nargs="+", type=pathlib.Path, metavar="WORKDIR",
                   help="a run's work directory, or one holding runs below it (grpo_vs_sft)")
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="where plots/ and report.md go (default: the one WORKDIR; needed with "
                        "several)")
    p.add_argument("--preset", default=None,
                   help="the preset to diff the config against, e.g. configs/sqa_grpo.py:smoke "
                        "(default: the closest of configs/)")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parser(prog).parse_args(argv)
    if len(args.workdirs) > 1 and args.out is None:
        parser(prog).error("several WORKDIRs: give --out")
    report = write_report(args.workdirs, args.out, args.preset)
    print(f"wrote {report.path} and {len(report.plots)} plots in {report.path.parent / 'plots'}")


if __name__ == "__main__":
    main()
