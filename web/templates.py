"""The site's pages, rendered with Jinja2 from web/templates. The environment is built, and Jinja2 imported, at the
first page asked for: webhooks, forward auth and health checks never need it, and start-up doesn't wait for it."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import jinja2

FOLDER = pathlib.Path(__file__).resolve().parent / "templates"


class Templates:
    def __init__(self, folder: pathlib.Path = FOLDER):
        self.folder = folder
        self._env: jinja2.Environment | None = None

    def environment(self) -> jinja2.Environment:
        if self._env is None:
            import jinja2

            self._env = jinja2.Environment(loader=jinja2.FileSystemLoader(self.folder), autoescape=True)
        return self._env

    def render(self, name: str, context: Mapping[str, Any], status: int = 200) -> web.Response:
        """The page `name` as an HTML answer."""
        text = self.environment().get_template(name).render(context)
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


TEMPLATES = web.AppKey("templates", Templates)


def render(name: str, request: web.Request, context: Mapping[str, Any], status: int = 200) -> web.Response:
    return request.app[TEMPLATES].render(name, context, status)
