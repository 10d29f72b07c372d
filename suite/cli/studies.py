"""`hummuss-suite list` and `show`: the registered studies."""

from __future__ import annotations

from suite.cli.common import get_study


def add_list_parser(sub) -> None:
    p = sub.add_parser("list", help="the registered studies")
    p.set_defaults(func=cmd_list)


def add_show_parser(sub) -> None:
    p = sub.add_parser("show", help="a study's variants, conditions and the paper's numbers")
    p.add_argument("study")
    p.set_defaults(func=cmd_show)


def cmd_list(args) -> int:
    from suite.registry import registry

    for study in registry().values():
        kind = " (stage)" if study.stage else ""
        print(f"{study.name:<22}{len(study.variants):>2} variants  {study.paper.table}{kind}")
        print(f"{'':<22}{study.question}")
    return 0


def cmd_show(args) -> int:
    study = get_study(args.study)
    print(f"{study.name}: {study.question}")
    print(f"paper: {study.paper.table}: {study.paper.caption}")
    if study.paper.note:
        print(f"note: {study.paper.note}")
    print("\nvariants:")
    for v in study.variants:
        extra = ", ".join(f"{k}={v_}" for k, v_ in {**v.config, **v.train}.items())
        print(f"  {v.name:<24} {v.model:<11} {extra}{'  init_from=' + v.init_from if v.init_from else ''}")
    ev = dict(study.eval)
    print(f"\nevaluation: {', '.join(f'{k}={v}' for k, v in ev.items()) or 'at the training length'}")
    print("scales: " + ", ".join(f"{s.name} ({s.data}, F={study.frames or s.frames}, seeds {list(s.seeds)})"
                                 for s in study.scales.values()))
    rows, cols = study.table.rows, study.table.columns
    print(f"\npaper's numbers ({study.table.metric}, {study.paper.unit}):")
    print(f"  {'':<34}" + "".join(f"{label:>16}" for _, label in cols))
    for key, label in rows:
        cells = [study.paper.numbers.get((key, c)) for c, _ in cols]
        print(f"  {label:<34}" + "".join(f"{'—' if v is None else v:>16}" for v in cells))
    return 0
