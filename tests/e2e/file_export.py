"""The shipped stack with collector-file-export.yaml layered on, and what it wrote.

No trace store runs in the tests, so the Collector's file exporter is where they
read exported traces back from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from local_stack import LocalStack  # type: ignore[import-not-found]

FILE_EXPORT_CONFIG = Path(__file__).resolve().with_name("collector-file-export.yaml")


def file_export_stack(work: Path, **kwargs: Any) -> tuple[LocalStack, Path]:
    """A (not yet started) stack in ``work`` and the directory its Collector exports to.

    :param kwargs: passed on to :class:`LocalStack` (e.g. ``with_alertmanager``).
    """
    export_dir = work / "collector-export"
    export_dir.mkdir(parents=True)
    stack = LocalStack(
        work / "run",
        extra_collector_configs=[FILE_EXPORT_CONFIG],
        collector_env={"OTELCOL_FILE_EXPORT_DIR": str(export_dir)},
        **kwargs,
    )
    return stack, export_dir


def exported_spans(export_dir: Path) -> list[dict[str, Any]]:
    """Every span in the file export (OTLP JSON), with its attributes as ``attrs``."""
    path = export_dir / "traces.jsonl"
    if not path.exists():
        return []
    spans = []
    # Only whole lines: the Collector may be writing the next one right now.
    for line in path.read_text().split("\n")[:-1]:
        for resource_spans in json.loads(line).get("resourceSpans", []):
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    span["attrs"] = {
                        a["key"]: next(iter(a["value"].values()), None)
                        for a in span.get("attributes", [])
                    }
                    spans.append(span)
    return spans
