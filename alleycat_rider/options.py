"""Click options whose default another layer decides, shown in help the way click shows any."""

from __future__ import annotations

from typing import Any

import click
from click.types import OptionHelpExtra


class DefaultInHelp(click.Option):
    """An option with no click default (the config file, the environment or AWS's own chain
    decides), whose help still ends in ``[default: ...]`` like every other option's."""

    def __init__(self, *args: Any, default_text: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_text = default_text
        """What applies when the option is not given, as help shows it."""

    def get_help_extra(self, ctx: click.Context) -> OptionHelpExtra:
        extra = super().get_help_extra(ctx)
        extra["default"] = self.default_text
        return extra


def default_in_help(text: str) -> dict[str, Any]:
    """``click.option`` arguments that show ``[default: TEXT]`` without setting a default."""
    return {"cls": DefaultInHelp, "default_text": text}
