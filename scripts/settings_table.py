"""Print the settings table of docs/serving.md from `ServeSettings` (one source for names and defaults)."""

from __future__ import annotations

from service.settings import ServeSettings


def table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in ServeSettings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `QIPO_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
