"""HTML pages from the Jinja2 templates in cnnlab/templates: autoescaped, self-contained (inline styles)."""

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def _percent(value):
    return "—" if value is None else f"{value:.2%}"


def _decimal(value):
    return "—" if value is None else f"{value:.4f}"


TEMPLATES = Environment(loader=PackageLoader("cnnlab", "templates"), autoescape=select_autoescape(["j2", "html"]),
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
TEMPLATES.filters.update(percent=_percent, decimal=_decimal)


def render(template, **context) -> str:
    return TEMPLATES.get_template(template).render(**context)
