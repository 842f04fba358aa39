"""Every rclpy name that the package's modules use exists in Humble's rclpy (3.3.15).

Robots on JetPack 6 run ROS 2 Humble, so the node may only use what Humble's rclpy has; CI runs
newer rclpy releases, which would not notice a newer call. The modules are read statically (no
rclpy needed) and each use is checked against test/data/rclpy_humble_api.txt, read from Humble's
sources by scripts/rclpy_api_list.py. Checked: names imported from rclpy, attribute chains on
them (`rclpy.qos.ReliabilityPolicy.BEST_EFFORT`), `self.<method>` calls in subclasses of rclpy's
node classes, calls on what a few node methods return (`self.get_logger().warning`), on
attributes assigned from them (`self._pub = self.create_publisher(...)`, then
`self._pub.publish`) and on local variables made by rclpy or node classes; and the keyword
arguments of all those calls. Not checked: objects that reach the code in other ways (callback
arguments, containers) and the number of positional arguments.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
API_FILE = Path(__file__).resolve().parent / "data" / "rclpy_humble_api.txt"
MODULE_FOLDERS = [REPO_ROOT / "mobilesam_ros"]

NODE_CLASSES = {"rclpy.node.Node", "rclpy.lifecycle.node.LifecycleNode"}
# What a few methods return, as classes of Humble's rclpy (read from its sources).
RETURNS = {
    "rclpy.node.Node.get_logger": "rclpy.impl.rcutils_logger.RcutilsLogger",
    "rclpy.node.Node.get_clock": "rclpy.clock.Clock",
    "rclpy.node.Node.create_publisher": "rclpy.publisher.Publisher",
    "rclpy.node.Node.create_subscription": "rclpy.subscription.Subscription",
    "rclpy.node.Node.create_timer": "rclpy.timer.Timer",
    "rclpy.node.Node.create_service": "rclpy.service.Service",
    "rclpy.node.Node.create_client": "rclpy.client.Client",
    "rclpy.node.Node.get_parameter": "rclpy.parameter.Parameter",
    "rclpy.node.Node.declare_parameter": "rclpy.parameter.Parameter",
    "rclpy.lifecycle.node.LifecycleNode.create_lifecycle_publisher": (
        "rclpy.lifecycle.publisher.LifecyclePublisher"
    ),
    "rclpy.clock.Clock.now": "rclpy.time.Time",
    "rclpy.time.Time.to_msg": "builtin_interfaces.msg.Time",
}
CONTAINERS = {"module", "class"}


class HumbleApi:
    def __init__(self, path: Path) -> None:
        self.kinds: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        self.parameters: dict[str, set[str]] = {}  # function -> its parameter names, * and **
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line or line.startswith("#"):
                continue
            if " = " in line:
                name, target = line.split(" = ")
                self.aliases[name] = target
            else:
                name, kind, *parameters = line.split()
                self.kinds[name] = kind
                if kind == "function":
                    self.parameters[name] = set(parameters[0].split(",")) if parameters else set()

    def canonical(self, name: str) -> str:
        """name with every aliased prefix replaced by what it names."""
        for _ in range(20):
            parts = name.split(".")
            for end in range(len(parts), 0, -1):
                prefix = ".".join(parts[:end])
                if prefix in self.aliases:
                    name = ".".join([self.aliases[prefix], *parts[end:]])
                    break
            else:
                return name
        return name

    def kind(self, name: str) -> str | None:
        return self.kinds.get(self.canonical(name))

    def unknown_keywords(self, name: str, keywords: list[str]) -> list[str]:
        """Keywords that the function (or the class's constructor) `name` does not take."""
        name = self.canonical(name)
        if self.kinds.get(name) == "class":
            name += ".__init__"
        parameters = self.parameters.get(name)
        if parameters is None or "**" in parameters:
            return []
        return [keyword for keyword in keywords if keyword not in parameters]


class Use:
    """One rclpy name used in a module, where it is used, and the keywords of a call of it."""

    def __init__(self, name: str, path: Path, line: int, keywords: list[str]) -> None:
        self.name, self.path, self.line, self.keywords = name, path, line, keywords

    def __repr__(self) -> str:
        called = f"({', '.join(k + '=' for k in self.keywords)})" if self.keywords else ""
        return f"{self.name}{called} ({self.path.relative_to(REPO_ROOT)}:{self.line})"


class ModuleReader:
    """Collects the rclpy names that one module uses (see the module docstring)."""

    def __init__(self, path: Path, api: HumbleApi) -> None:
        self.path, self.api = path, api
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.names: dict[str, str] = {}  # local name -> rclpy (or node class) qualified name
        self.uses: list[Use] = []
        # Keyword arguments of each call, by the called expression.
        self.call_keywords = {
            id(node.func): [keyword.arg for keyword in node.keywords if keyword.arg]
            for node in ast.walk(self.tree)
            if isinstance(node, ast.Call)
        }
        self.node_classes: dict[str, str] = {}  # class in this module -> its rclpy node base
        self.own_members: dict[str, set[str]] = {}  # what those classes define themselves

    def read(self) -> list[Use]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "rclpy":
                        self.add(alias.name, node)
                        self.names[alias.asname or alias.name.split(".")[0]] = (
                            alias.name if alias.asname else "rclpy"
                        )
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rclpy"):
                for alias in node.names:
                    self.add(f"{node.module}.{alias.name}", node)
                    self.names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ClassDef):
                self.read_class(node)
        self.read_local_variables()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store):
                self.read_chain(node, {})
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                self.read_chain(node.func, {})  # QoSProfile(depth=1)
        return self.uses

    def add(self, name: str, node: ast.AST) -> None:
        keywords = self.call_keywords.get(id(node), [])
        self.uses.append(Use(name, self.path, getattr(node, "lineno", 0), keywords))

    def node_base(self, node: ast.ClassDef) -> str | None:
        for base in node.bases:
            qualified = self.qualified(base, {})
            if qualified is None:
                continue
            qualified = self.api.canonical(qualified)
            if qualified in NODE_CLASSES:
                return qualified
            if qualified in self.node_classes.values():
                return qualified
        return None

    def read_class(self, node: ast.ClassDef) -> None:
        base = self.node_base(node)
        if base is None:
            return
        self.node_classes[node.name] = base
        own = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        for item in node.body:
            if isinstance(item, ast.Assign | ast.AnnAssign):
                targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                own |= {target.id for target in targets if isinstance(target, ast.Name)}
        self.own_members[node.name] = own
        attributes: dict[str, str] = {}
        for item in ast.walk(node):
            if isinstance(item, ast.Assign | ast.AnnAssign):
                targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                for target in targets:
                    if self.is_self_attribute(target):
                        own.add(target.attr)
                        produced = self.type_of(item.value, base, {})
                        if produced is not None:
                            attributes[target.attr] = produced
        self_names = {"self": base}
        for item in ast.walk(node):
            if not isinstance(item, ast.Attribute) or not self.is_self_attribute(item):
                continue
            if item.attr not in own:
                self.add(f"{base}.{item.attr}", item)
        for item in ast.walk(node):
            if isinstance(item, ast.Attribute) and isinstance(item.value, ast.Attribute):
                inner = item.value
                if self.is_self_attribute(inner) and inner.attr in attributes:
                    self.add(f"{attributes[inner.attr]}.{item.attr}", item)
            if isinstance(item, ast.Attribute) and isinstance(item.value, ast.Call):
                produced = self.type_of(item.value, base, self_names)
                if produced is not None and produced.startswith("rclpy."):
                    self.add(f"{produced}.{item.attr}", item)

    @staticmethod
    def is_self_attribute(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        )

    def read_local_variables(self) -> None:
        """`x = SomeNode(...)`, `x = rclpy.executors.X(...)`: later `x.method` uses are checked."""
        local_types: dict[str, str] = {}
        local_own: dict[str, set[str]] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                callee = node.value.func
                produced = None
                own: set[str] = set()
                if isinstance(callee, ast.Name) and callee.id in self.node_classes:
                    produced = self.node_classes[callee.id]
                    own = self.own_members[callee.id]
                else:
                    qualified = self.qualified(callee, {})
                    if qualified and self.api.kind(qualified) == "class":
                        produced = self.api.canonical(qualified)
                for target in node.targets:
                    if isinstance(target, ast.Name) and produced is not None:
                        local_types[target.id] = produced
                        local_own[target.id] = own
        for node in ast.walk(self.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in local_types
                and node.value.id not in self.names
                and node.attr not in local_own[node.value.id]
            ):
                self.add(f"{local_types[node.value.id]}.{node.attr}", node)

    def qualified(self, node: ast.expr, scope: dict[str, str]) -> str | None:
        """The rclpy name that an expression of names and attributes stands for."""
        if isinstance(node, ast.Name):
            return scope.get(node.id, self.names.get(node.id))
        if isinstance(node, ast.Attribute):
            inner = self.qualified(node.value, scope)
            return None if inner is None else f"{inner}.{node.attr}"
        return None

    def type_of(self, node: ast.expr | None, base: str, scope: dict[str, str]) -> str | None:
        """The rclpy class that a call of a node method or of a known method returns."""
        if not isinstance(node, ast.Call):
            return None
        callee = node.func
        if not isinstance(callee, ast.Attribute):
            return None
        if self.is_self_attribute(callee):
            method = self.api.canonical(f"{base}.{callee.attr}")
            for node_class in NODE_CLASSES:
                if method.startswith(node_class + "."):
                    method = method.removeprefix(node_class + ".")
                    return RETURNS.get(f"{node_class}.{method}") or RETURNS.get(
                        f"rclpy.node.Node.{method}"
                    )
            return None
        receiver = self.type_of(callee.value, base, scope) or self.qualified(callee.value, scope)
        if receiver is None:
            return None
        return RETURNS.get(f"{self.api.canonical(receiver)}.{callee.attr}")

    def read_chain(self, node: ast.Attribute | ast.Name, scope: dict[str, str]) -> None:
        qualified = self.qualified(node, scope)
        if qualified is not None and qualified.split(".")[0] == "rclpy":
            self.add(qualified, node)


def unresolved(api: HumbleApi, name: str) -> bool:
    """True when a prefix of name that Humble's API must hold (modules and classes go on to
    their members; a function or attribute ends the check) is missing."""
    parts = name.split(".")
    for end in range(2, len(parts) + 1):
        kind = api.kind(".".join(parts[:end]))
        if kind is None:
            return True
        if kind not in CONTAINERS:
            return False
    return False


def modules_using_rclpy() -> list[Path]:
    return sorted(
        path
        for folder in MODULE_FOLDERS
        for path in folder.rglob("*.py")
        if "rclpy" in path.read_text(encoding="utf-8")
    )


@pytest.fixture(scope="module")
def api() -> HumbleApi:
    return HumbleApi(API_FILE)


def test_api_list_holds_what_humble_is_known_to_have(api):
    # A few names that Humble's rclpy has for certain, as a check of the list and its reader.
    for name in (
        "rclpy.init",
        "rclpy.try_shutdown",
        "rclpy.node.Node.create_subscription",
        "rclpy.lifecycle.LifecycleNode.create_lifecycle_publisher",
        "rclpy.lifecycle.TransitionCallbackReturn.SUCCESS",
        "rclpy.qos.ReliabilityPolicy.BEST_EFFORT",
    ):
        assert not unresolved(api, name), name
    # Names that came after Humble.
    for name in ("rclpy.node.Node.add_post_set_parameters_callback", "rclpy.event_handler"):
        assert unresolved(api, name), name


def test_reader_finds_uses_of_every_kind(api, tmp_path):
    module = tmp_path / "sample.py"
    module.write_text(
        "import rclpy\n"
        "from rclpy.node import Node\n"
        "from rclpy.qos import ReliabilityPolicy\n"
        "class Sample(Node):\n"
        "    def __init__(self):\n"
        "        self._pub = self.create_publisher(int, 't', 1, qos_overriding_options=None)\n"
        "        self.create_subscription(int, 't', print, 1, raw=False, unknown_option=1)\n"
        "        self._pub.publish_twice(1)\n"
        "        self.get_logger().warning(str(ReliabilityPolicy.BEST_EFFORT))\n"
        "        self.add_post_set_parameters_callback(print)\n"
        "def main():\n"
        "    node = Sample()\n"
        "    node.destroy_node()\n"
        "    rclpy.shutdown()\n",
        encoding="utf-8",
    )
    reader = ModuleReader(module, api)
    names = {use.name for use in reader.read()}
    assert {
        "rclpy.node.Node.create_publisher",
        "rclpy.publisher.Publisher.publish_twice",
        "rclpy.impl.rcutils_logger.RcutilsLogger.warning",
        "rclpy.qos.ReliabilityPolicy.BEST_EFFORT",
        "rclpy.node.Node.add_post_set_parameters_callback",
        "rclpy.node.Node.destroy_node",
        "rclpy.shutdown",
    } <= names
    missing = sorted(name for name in names if unresolved(api, name))
    assert missing == [
        "rclpy.node.Node.add_post_set_parameters_callback",
        "rclpy.publisher.Publisher.publish_twice",
    ]
    refused = {use.name: api.unknown_keywords(use.name, use.keywords) for use in reader.uses}
    assert refused["rclpy.node.Node.create_subscription"] == ["unknown_option"]
    assert refused["rclpy.node.Node.create_publisher"] == []


def test_package_uses_only_humble_rclpy(api):
    paths = modules_using_rclpy()
    assert paths, "no module of the package uses rclpy: the check would check nothing"
    uses = [use for path in paths for use in ModuleReader(path, api).read()]
    missing = [use for use in uses if unresolved(api, use.name)]
    assert not missing, f"not in Humble's rclpy (3.3.15): {missing}"
    refused = [use for use in uses if api.unknown_keywords(use.name, use.keywords)]
    assert not refused, f"keywords that Humble's rclpy (3.3.15) does not take: {refused}"
