"""``multipair completion bash|zsh``: a shell completion script, made from the parser itself.

Every subcommand, action and option comes from :func:`multipair.cli.build_parser`,
so the script never lags behind the commands. Install::

    multipair completion bash > ~/.local/share/bash-completion/completions/multipair
    multipair completion zsh > ~/.zfunc/_multipair     # or: eval "$(multipair completion zsh)"

zsh runs the bash function through ``bashcompinit``. Lane ids are not
completed (that would ask Redis on every Tab): type the first 4 characters.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Final

from multipair.cli._base import ExitCode, Subparsers

__all__ = ["add_completion_parser", "command_tree", "completion_script"]

_SHELLS: Final = ("bash", "zsh")


def add_completion_parser(subparsers: Subparsers) -> None:
    """Register ``multipair completion``."""
    parser = subparsers.add_parser(
        "completion",
        help="print a bash or zsh completion script",
        description=(
            "Print a completion script for bash or zsh. Install it with e.g. "
            "`multipair completion bash > ~/.local/share/bash-completion/completions/multipair`, "
            'or add `eval "$(multipair completion zsh)"` to ~/.zshrc.'
        ),
    )
    parser.add_argument("shell", choices=_SHELLS)
    parser.set_defaults(handler=_completion)


def _completion(args: argparse.Namespace) -> int:
    from multipair.cli import build_parser

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return ExitCode.OK


def command_tree(parser: argparse.ArgumentParser) -> dict[str, tuple[list[str], list[str]]]:
    """``"lane add"`` -> (its subcommands, its options); ``""`` is the top level."""
    tree: dict[str, tuple[list[str], list[str]]] = {}

    def walk(prefix: str, node: argparse.ArgumentParser) -> None:
        children: list[str] = []
        options: list[str] = []
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    children.append(name)
                    walk(f"{prefix} {name}".strip(), sub)
            else:
                options += [o for o in action.option_strings if o.startswith("--")]
        tree[prefix] = (sorted(set(children)), sorted(set(options)))

    walk("", parser)
    return tree


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The script for ``shell`` (``bash`` or ``zsh``)."""
    tree = command_tree(parser)
    cases = []
    for path, (children, options) in sorted(tree.items()):
        words = " ".join([*children, *options])
        cases.append(f"        {shlex.quote(path)}) words={shlex.quote(words)} ;;")
    body = "\n".join(cases)
    script = f"""# multipair {shell} completion (multipair completion {shell})
_multipair() {{
    local cur path word words i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    path=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case "$word" in -*) continue ;; esac
        case " $(_multipair_children "$path") " in
            *" $word "*) path="${{path:+$path }}$word" ;;
        esac
    done
    words="$(_multipair_words "$path")"
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
_multipair_words() {{
    local words=""
    case "$1" in
{body}
    esac
    printf '%s' "$words"
}}
_multipair_children() {{
    local w
    for w in $(_multipair_words "$1"); do
        case "$w" in -*) ;; *) printf '%s ' "$w" ;; esac
    done
}}
"""
    if shell == "zsh":
        script += "autoload -U +X bashcompinit && bashcompinit\n"
    return script + "complete -F _multipair multipair\n"
