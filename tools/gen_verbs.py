"""Generate ``jambonz_trio/_protocol/_verbs.py`` from verb-specifications' ``specs.json``.

    .venv/bin/python tools/gen_verbs.py [SPECS_JSON] [--out PATH] [--overrides TOML] [--check]

``SPECS_JSON`` defaults to the copy ``npm install --prefix tests/conformance`` installs (the
version tests/conformance/package.json pins, the one feature-server 0.9.8 depends on). What
specs.json cannot say - Python class names, docstrings, ``int`` or ``float`` for a "number",
secrets hidden from ``repr``, properties not to model - comes from ``tools/verbs_overrides.toml``.
The output is formatted with ``ruff format`` (the repository's settings). ``--check`` writes
nothing and exits 1 when the file on disk differs from what would be generated.
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ROOT / "tools" / "verbs_overrides.toml"
OUT = ROOT / "jambonz_trio" / "_protocol" / "_verbs.py"
SPECS = ROOT / "tests" / "conformance" / "node_modules" / "@jambonz" / "verb-specifications" / "specs.json"

# Union members are written in this order (``int | str``, ``str | list[str]``, ``bool | int``).
_KIND_ORDER = ["boolean", "number", "string", "array", "object"]


def snake(wire: str) -> str:
    """The Python name of a wire property: ``actionHook`` -> ``action_hook``, ``from`` -> ``from_``."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", wire).lower()
    return name + "_" if keyword.iskeyword(name) else name


def camel(name: str) -> str:
    """What ``_wire.to_wire_name`` writes for ``name`` in the camel style."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def class_name(spec_name: str, overrides: dict[str, Any]) -> str:
    explicit = overrides["models"].get(spec_name, {}).get("name")
    if explicit:
        return str(explicit)
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_:]", spec_name))


class Generator:
    def __init__(self, specs: dict[str, Any], overrides: dict[str, Any], version: str) -> None:
        self.specs = specs
        self.overrides = overrides
        self.version = version
        self.verbs: list[str] = overrides["verbs"]
        self.names = {name: class_name(name, overrides) for name in specs}
        self.models = self._reachable()
        self.uses: set[str] = set()

    def _model(self, spec_name: str) -> dict[str, Any]:
        model: dict[str, Any] = self.overrides["models"].get(spec_name, {})
        return model

    def _properties(self, spec_name: str) -> Iterator[tuple[str, Any]]:
        skip = set(self._model(spec_name).get("skip", []))
        for wire, prop in self.specs[spec_name]["properties"].items():
            if wire in skip or (wire == "id" and spec_name in self.verbs):
                continue
            yield wire, prop

    def _reachable(self) -> list[str]:
        """The verbs and every object they reference, in specs.json order."""
        seen: set[str] = set()
        todo = list(self.verbs)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            if name not in self.specs:
                raise SystemExit(f"specs.json has no {name!r}")
            seen.add(name)
            for _, prop in self._properties(name):
                todo.extend(ref[1:] for ref in _refs(prop))
        return [name for name in self.specs if name in seen]

    # -- types ------------------------------------------------------------------------------

    def _number(self, spec_name: str, wire: str) -> str:
        ints = set(self.overrides["int"]) | set(self._model(spec_name).get("int", []))
        return "int" if wire in ints else "float"

    def _type(self, spec_name: str, wire: str, prop: Any) -> str:
        if isinstance(prop, list):
            (ref,) = prop
            return f"list[{self.names[ref[1:]]}]"
        if isinstance(prop, dict):
            if prop.get("type") != "string" or "enum" not in prop:
                raise SystemExit(f"{spec_name}.{wire}: unsupported property {prop!r}")
            self.uses.add("Literal")
            return "Literal[" + ", ".join(json.dumps(value) for value in prop["enum"]) + "]"
        if prop.startswith("#"):
            return self.names[prop[1:]]
        kinds = sorted((kind.strip() for kind in prop.split("|")), key=_KIND_ORDER.index)
        if kinds == ["string", "object"] and snake(wire).endswith("_hook"):
            self.uses.add("Hook")
            return "Hook"
        types = []
        for kind in kinds:
            if kind == "string":
                types.append("str")
            elif kind == "boolean":
                types.append("bool")
            elif kind == "number":
                types.append(self._number(spec_name, wire))
            elif kind == "array":
                item = "Any" if wire in self.overrides["any_list"] else "str"
                types.append(f"list[{item}]")
            elif kind == "object":
                value = "str" if wire in self.overrides["str_dict"] else "Any"
                types.append(f"dict[str, {value}]")
            self.uses.update({"Any"} if "Any" in types[-1] else set())
        return " | ".join(types)

    # -- code -------------------------------------------------------------------------------

    def _fields(self, spec_name: str) -> tuple[str, list[str]]:
        """The class's wire style and its field lines."""
        spec = self.specs[spec_name]
        required = set(spec.get("required") or [])
        props = list(self._properties(spec_name))
        first = self._model(spec_name).get("first", [])
        order = [w for w in first] + [w for w, _ in props if w in required and w not in first]
        order += [w for w, _ in props if w not in required and w not in first]
        by_wire = dict(props)
        camel_misses = sum(camel(snake(w)) != w for w in order)
        snake_misses = sum(snake(w).rstrip("_") != w for w in order)
        style = "snake" if snake_misses < camel_misses else "camel"
        secrets = set(self._model(spec_name).get("secret", []))
        unknown = (secrets | set(first)) - set(by_wire)
        if unknown:
            raise SystemExit(f"{spec_name}: overrides name unknown properties {sorted(unknown)}")
        lines = []
        for wire in order:
            name = snake(wire)
            tp = self._type(spec_name, wire, by_wire[wire])
            derived = camel(name) if style == "camel" else name.rstrip("_")
            args = []
            if wire not in required:
                tp += " | None"
                args.append("default=None")
            if wire in secrets:
                args.append("repr=False")
            if derived != wire:
                self.uses.add("WIRE")
                args.append(f"metadata={{WIRE: {json.dumps(wire)}}}")
            if args == ["default=None"]:
                lines.append(f"{name}: {tp} = None")
            elif args:
                lines.append(f"{name}: {tp} = attrs.field({', '.join(args)})")
            else:
                lines.append(f"{name}: {tp}")
        return style, lines

    def _class(self, spec_name: str) -> str:
        is_verb = spec_name in self.verbs
        style, fields = self._fields(spec_name)
        doc = self._model(spec_name).get("doc")
        if not doc:
            raise SystemExit(f"{spec_name}: tools/verbs_overrides.toml gives it no doc")
        doc = doc.strip()
        doc_lines = doc.split("\n")
        if len(doc_lines) > 1:
            doc = "\n".join(f"    {line}" if line else "" for line in doc_lines)[4:] + "\n    "
        body = [f'    """{doc}"""', ""]
        if is_verb:
            body.append(f'    VERB: ClassVar[str] = "{spec_name}"')
        if style != "camel":
            self.uses.add("Style")
            body.append(f'    STYLE: ClassVar[Style] = "{style}"')
        if is_verb or style != "camel":
            self.uses.add("ClassVar")
            if fields:
                body.append("")
        body.extend(f"    {line}" for line in fields)
        base = "Verb" if is_verb else "Model"
        self.uses.add(base)
        head = f"@attrs.frozen(kw_only=True, repr=False)\nclass {self.names[spec_name]}({base}):"
        return head + "\n" + "\n".join(body).rstrip() + "\n"

    def module(self) -> str:
        unused = set(self.overrides["models"]) - set(self.models)
        if unused:
            raise SystemExit(f"overrides for models that are not generated: {sorted(unused)}")
        classes = [self._class(name) for name in self.models]
        exported = sorted(["ALL_VERB_CLASSES", *(self.names[name] for name in self.models)])
        typing_names = sorted(self.uses & {"Any", "ClassVar", "Literal"})
        wire_names = sorted(self.uses & {"Model", "Style", "WIRE"}, key=lambda n: (n != "WIRE", n))
        header = f'''"""Typed models for every verb feature-server 0.9.8 accepts, and their nested objects.

GENERATED by ``tools/gen_verbs.py`` from @jambonz/verb-specifications {self.version} ``specs.json``
(the validator feature-server 0.9.8 runs on every verb list, see ``docs/protocol.md`` §8) and
``tools/verbs_overrides.toml``. Do not edit: change the overrides and run the generator.

Python names are snake_case; each class writes its wire names in its ``STYLE`` (camelCase unless it
says otherwise) or a field's explicit ``WIRE`` name. A few verbs embed another verb's options
(``gather.say``, ``dial.dub``, ``conference.listen``, ...): those fields take the verb classes
themselves and are written without the ``"verb"`` key, because jambonz validates them as bare
property objects.
"""

from __future__ import annotations

from typing import {", ".join(typing_names)}

import attrs

from ._verbs_base import {", ".join([*sorted(self.uses & {"Hook", "Verb"}), "register_verbs"])}
from ._wire import {", ".join(wire_names)}

__all__ = [{", ".join(json.dumps(name) for name in exported)}]
'''
        verbs = ", ".join(self.names[name] for name in self.verbs)
        footer = f"""
#: Every verb model, one per verb name feature-server 0.9.8 implements.
ALL_VERB_CLASSES: tuple[type[Verb], ...] = ({verbs},)

register_verbs(ALL_VERB_CLASSES)
"""
        return header + "\n\n" + "\n\n".join(classes) + "\n" + footer


def _refs(prop: Any) -> list[str]:
    if isinstance(prop, list):
        return [str(item) for item in prop]
    if isinstance(prop, str) and prop.startswith("#"):
        return [prop]
    return []


def ruff_format(source: str, path: Path) -> str:
    """``source`` as ``ruff format`` (the repository's settings) writes it."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(path), "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"ruff format failed:\n{proc.stderr}")
    return proc.stdout


def generate(specs_path: Path, overrides_path: Path = OVERRIDES) -> str:
    """The text of ``_verbs.py`` for ``specs_path`` (a specs.json) and the overrides."""
    specs = json.loads(specs_path.read_text(encoding="utf-8"))
    package = specs_path.parent / "package.json"
    version = json.loads(package.read_text(encoding="utf-8"))["version"] if package.exists() else "(unknown)"
    with overrides_path.open("rb") as f:
        overrides = tomllib.load(f)
    return ruff_format(Generator(specs, overrides, version).module(), OUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="?", type=Path, default=SPECS, help="path of specs.json")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the module")
    parser.add_argument("--overrides", type=Path, default=OVERRIDES, help="the overrides TOML file")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out is not current")
    args = parser.parse_args(argv)
    if not args.specs.exists():
        parser.error(f"{args.specs} missing: run npm install --prefix tests/conformance")
    text = generate(args.specs, args.overrides)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is not current: run python tools/gen_verbs.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
