"""List the Python API of an rclpy source tree, for test/data/rclpy_humble_api.txt.

Reads the rclpy package's sources statically (nothing is imported) and prints one line per name:
`<qualified name> <kind>` with kind module, class, function or attribute (a function followed by
its parameter names, `*` for *args and `**` for **kwargs), or
`<qualified name> = <qualified target>` for a name that a module imports or assigns from
elsewhere in rclpy (`rclpy.lifecycle.LifecycleNode = rclpy.lifecycle.node.LifecycleNode`). Class
members include inherited ones (from rclpy classes), methods, class attributes (enum members) and
attributes that methods assign to `self`. Enums of the C++ extension that a module re-exports
(`TransitionCallbackReturn = _rclpy.TransitionCallbackReturnType`) get their values from the
extension's sources (`py::enum_<...>(m, "Name").value("VALUE", ...)`).

Usage, from a clone of the rclpy repository:
    git archive humble rclpy | tar -x -C /tmp/rclpy-humble
    python scripts/rclpy_api_list.py /tmp/rclpy-humble/rclpy > test/data/rclpy_humble_api.txt
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path


def module_name(package_dir: Path, path: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def extension_enums(source_dir: Path) -> dict[str, list[str]]:
    """Values of the enums that the C++ extension binds with pybind11, by Python name."""
    enums: dict[str, list[str]] = {}
    binding = re.compile(r'py::enum_<[^>]+>\(\s*m,\s*"(\w+)"\)(.*?);', re.DOTALL)
    for path in sorted(source_dir.rglob("*.cpp")):
        for match in binding.finditer(path.read_text(encoding="utf-8")):
            enums[match.group(1)] = re.findall(r'\.value\(\s*"(\w+)"', match.group(2))
    return enums


def signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """`function a,b,c` with `*` and `**` for *args and **kwargs (self and cls left out)."""
    arguments = node.args
    names = [a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]]
    names = [name for name in names if name not in ("self", "cls")]
    if arguments.vararg:
        names.append("*")
    if arguments.kwarg:
        names.append("**")
    return "function " + ",".join(names) if names else "function"


def top_level_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements of a module body, looking into if/try blocks (conditional imports)."""
    statements: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):
            statements += top_level_statements(node.body) + top_level_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                statements += top_level_statements(block)
            for handler in node.handlers:
                statements += top_level_statements(handler.body)
        else:
            statements.append(node)
    return statements


def assigned_names(node: ast.stmt) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]  # type: ignore[attr-defined]
    names = []
    for target in targets:
        elements = target.elts if isinstance(target, ast.Tuple) else [target]
        names += [element.id for element in elements if isinstance(element, ast.Name)]
    return names


class ApiReader:
    def __init__(self, enums: dict[str, list[str]]) -> None:
        self.enums = enums
        self.kinds: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        self.class_bases: dict[str, list[str]] = {}

    def read_module(self, name: str, is_package: bool, tree: ast.Module) -> None:
        self.kinds[name] = "module"
        package = name if is_package else name.rpartition(".")[0]
        imported: dict[str, str] = {}
        for node in top_level_statements(tree.body):
            if isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join([*base, source] if source else base)
                for alias in node.names:
                    local = alias.asname or alias.name
                    imported[local] = f"{source}.{alias.name}"
                    if source.split(".")[0] == "rclpy":
                        self.aliases[f"{name}.{local}"] = f"{source}.{alias.name}"
                    else:
                        self.kinds[f"{name}.{local}"] = "attribute"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        imported[alias.asname] = alias.name
                        self.kinds[f"{name}.{alias.asname}"] = "attribute"
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.kinds[f"{name}.{node.name}"] = signature(node)
            elif isinstance(node, ast.ClassDef):
                self.read_class(f"{name}.{node.name}", node, imported, name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                for target in assigned_names(node):
                    self.read_assignment(f"{name}.{target}", node.value, imported, name)

    def read_assignment(
        self, qualified: str, value: ast.expr | None, imported: dict[str, str], module: str
    ) -> None:
        """`X = Y` of an rclpy name is an alias, `X = _rclpy.Enum` an enum of the extension."""
        if isinstance(value, ast.Name):
            target = imported.get(value.id, f"{module}.{value.id}")
            if target.split(".")[0] == "rclpy":
                self.aliases[qualified] = target
                return
        if (
            isinstance(value, ast.Attribute)
            and isinstance(value.value, ast.Name)
            and imported.get(value.value.id, "").endswith(".rclpy_implementation")
            and value.attr in self.enums
        ):
            self.kinds[qualified] = "class"
            for member in self.enums[value.attr]:
                self.kinds[f"{qualified}.{member}"] = "attribute"
            return
        self.kinds[qualified] = "attribute"

    def read_class(
        self, qualified: str, node: ast.ClassDef, imported: dict[str, str], module: str
    ) -> None:
        self.kinds[qualified] = "class"
        bases = []
        for base in node.bases:
            if isinstance(base, ast.Name):
                bases.append(imported.get(base.id, f"{module}.{base.id}"))
            elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
                bases.append(f"{imported.get(base.value.id, base.value.id)}.{base.attr}")
        self.class_bases[qualified] = bases
        for member in node.body:
            if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                self.kinds[f"{qualified}.{member.name}"] = signature(member)
                for inner in ast.walk(member):
                    if isinstance(inner, ast.Assign | ast.AnnAssign):
                        targets = inner.targets if isinstance(inner, ast.Assign) else [inner.target]
                        for target in targets:
                            if (
                                isinstance(target, ast.Attribute)
                                and isinstance(target.value, ast.Name)
                                and target.value.id == "self"
                            ):
                                self.kinds.setdefault(f"{qualified}.{target.attr}", "attribute")
            elif isinstance(member, ast.ClassDef):
                self.read_class(f"{qualified}.{member.name}", member, imported, module)
            elif isinstance(member, ast.Assign | ast.AnnAssign):
                for target in assigned_names(member):
                    self.kinds[f"{qualified}.{target}"] = "attribute"

    def resolve(self, name: str) -> str:
        for _ in range(20):
            if name not in self.aliases:
                return name
            name = self.aliases[name]
        return name

    def members(self, qualified: str) -> dict[str, str]:
        prefix = qualified + "."
        return {
            key[len(prefix) :]: kind
            for key, kind in self.kinds.items()
            if key.startswith(prefix) and "." not in key[len(prefix) :]
        }

    def add_inherited_members(self) -> None:
        def inherited(qualified: str, seen: frozenset[str]) -> dict[str, str]:
            result: dict[str, str] = {}
            for base in self.class_bases.get(qualified, []):
                base = self.resolve(base)
                if base in seen or self.kinds.get(base) != "class":
                    continue
                result.update(inherited(base, seen | {base}))
                result.update(self.members(base))
            return result

        for qualified in list(self.class_bases):
            own = self.members(qualified)
            for member, kind in inherited(qualified, frozenset({qualified})).items():
                if member not in own:
                    self.kinds[f"{qualified}.{member}"] = kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "source_dir", type=Path, help="rclpy's ROS package folder (rclpy/ of the repository)"
    )
    args = parser.parse_args()
    package_dir = args.source_dir.resolve() / "rclpy"
    if not (package_dir / "__init__.py").is_file():
        sys.exit(f"source_dir: {package_dir} has no __init__.py; pass rclpy/ of the repository")
    reader = ApiReader(extension_enums(args.source_dir.resolve() / "src"))
    for path in sorted(package_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        reader.read_module(module_name(package_dir, path), path.name == "__init__.py", tree)
    reader.add_inherited_members()
    lines = [f"{name} {kind}" for name, kind in reader.kinds.items()]
    lines += [f"{name} = {target}" for name, target in reader.aliases.items()]
    print("\n".join(sorted(lines)))


if __name__ == "__main__":
    main()
