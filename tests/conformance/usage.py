"""Every name gpudiag's code uses on torch and on pynvml, found by walking its source (ast), with where and how.

torch: attribute chains from a torch root - `import torch` / `from torch.x import y` / `import torch.distributed
as dist`, and the names `torch` and `dist`, which in gpudiag always hold torch and torch.distributed (or a
test's fake of them) whether imported, passed in as a parameter or returned by a helper. Simple local
aliases (`nn = torch.nn`, `sync = torch.cuda.synchronize`) are followed, and so are the objects torch
returns where the walk can tell their type: events, streams, graphs, tensors and device properties, also
through tuples, comprehensions, slices and `for a, b in zip(...)`, so `start.record(stream)` is checked
against torch.cuda.Event.record.

pynvml: names given as strings to the seam (`n.call("nvml...")`, `n.first([...])`, `n.function(...)`,
`getattr(lib, "nvml...")`), attributes `nvml*` read off a library object, any other "nvml..." string
constant (a tuple of spellings written out for the seam), and the NVML_* integer constants gpudiag
copies from nvml.h. A list or tuple of several names is a fallback list: one of them must exist.

Each use keeps the call's shape (positional count, keyword names) where it is called without * or **
unpacking, so the conformance tests can bind it to the real signature.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCES = ("gpudiag", "scripts")
NVML_NAME = re.compile(r"^nvml[A-Z][A-Za-z0-9_]*$")

# Names that always hold a torch module in gpudiag's code (imported, a parameter, or a helper's result).
TORCH_NAMES = {"torch": "torch", "dist": "torch.distributed"}
# What a call returns, where gpudiag goes on to use it: torch path -> the class of the object.
TENSOR = "torch.Tensor"
PROPS = "torch._C._CudaDeviceProperties"
RETURNS = {
    "torch.cuda.Event": "torch.cuda.Event", "torch.cuda.Stream": "torch.cuda.Stream",
    "torch.cuda.current_stream": "torch.cuda.Stream", "torch.cuda.CUDAGraph": "torch.cuda.CUDAGraph",
    "torch.cuda.get_device_properties": PROPS,
    **{f"torch.{f}": TENSOR for f in ("zeros", "ones", "empty", "randn", "full", "tensor", "stack", "frombuffer",
                                      "empty_like", "mm", "randint", "matmul")},
    **{f"{TENSOR}.{m}": TENSOR for m in ("pin_memory", "to", "clone", "cuda", "cpu", "float", "half", "add_",
                                        "copy_", "contiguous", "detach", "view", "reshape", "mm", "__matmul__")},
}


@dataclass(frozen=True)
class Use:
    lib: str  # "torch" or "pynvml"
    path: str  # "torch.cuda.Event.record", "pynvml.nvmlDeviceGetName", "pynvml.NVML_CLOCK_SM"
    file: str  # relative to the repository
    line: int
    call: Optional[Tuple[int, Tuple[str, ...]]] = None  # (positional args, keyword names) of a plain call
    fallbacks: Tuple[str, ...] = ()  # the whole fallback list this name is one spelling in
    value: Any = None  # an NVML_* constant's value in gpudiag

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def source_files(root: str = ROOT) -> Iterator[str]:
    for top in SOURCES:
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if f.endswith(".py"):
                    yield os.path.join(dirpath, f)


def _shape(call: ast.Call, skip: int = 0, drop_kw: Sequence[str] = ()) -> Optional[Tuple[int, Tuple[str, ...]]]:
    """(positional count, keyword names) of a call, or None when it unpacks *args or **kwargs."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return None
    return len(call.args) - skip, tuple(k.arg for k in call.keywords if k.arg not in drop_kw)


class _Walker(ast.NodeVisitor):
    """One module: walks statements in source order, keeping what each name holds (a torch path, an object of
    a torch class, a list of them, or a tuple of those)."""

    def __init__(self, rel: str):
        self.rel = rel
        self.uses: List[Use] = []
        self.scopes: List[Dict[str, Any]] = [dict((k, ("path", v)) for k, v in TORCH_NAMES.items())]
        self._nvml_seen: set = set()  # (line, col) of string constants already recorded as NVML names

    # ---- scopes and bindings

    def lookup(self, name: str) -> Any:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def bind(self, target: ast.AST, kind: Any) -> None:
        if isinstance(target, ast.Name):
            self.scopes[-1][target.id] = kind
        elif isinstance(target, (ast.Tuple, ast.List)):
            parts = kind[1] if kind and kind[0] == "tuple" else None
            for i, elt in enumerate(target.elts):
                sub = parts[i] if parts and i < len(parts) else (("obj", kind[1]) if kind and kind[0] == "list"
                                                                 else None)
                self.bind(elt, sub)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        self.scopes.append({})
        for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
            if a.arg in TORCH_NAMES:
                self.scopes[-1][a.arg] = ("path", TORCH_NAMES[a.arg])
            else:
                self.scopes[-1][a.arg] = None  # a parameter shadows an outer name
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.scopes.append({a.arg: None for a in node.args.args})
        self.visit(node.body)
        self.scopes.pop()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "torch" or alias.name.startswith("torch."):
                if alias.asname:
                    self.scopes[-1][alias.asname] = ("path", alias.name)
                    self.use_torch(alias.name, node)
                else:
                    self.scopes[-1]["torch"] = ("path", "torch")
                    self.use_torch(alias.name, node)
            elif alias.name == "pynvml":
                self.scopes[-1][alias.asname or "pynvml"] = ("pynvml", None)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if mod == "torch" or mod.startswith("torch."):
            for alias in node.names:
                path = f"{mod}.{alias.name}"
                self.scopes[-1][alias.asname or alias.name] = ("path", path)
                self.use_torch(path, node)

    def visit_Assign(self, node: ast.Assign) -> None:
        kind = self.typeof(node.value)
        for t in node.targets:
            self.visit_target(t)
            self.bind(t, kind)
        if isinstance(node.targets[0], ast.Name) and node.targets[0].id.startswith("NVML_") \
                and self.scopes[0] is self.scopes[-1]:
            self.record_constant(node.targets[0].id, node.value, node)
        if isinstance(node.targets[0], ast.Tuple) and isinstance(node.value, ast.Tuple) and self.scopes[0] is self.scopes[-1]:
            for t, v in zip(node.targets[0].elts, node.value.elts):
                if isinstance(t, ast.Name) and t.id.startswith("NVML_"):
                    self.record_constant(t.id, v, node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        kind = self.typeof(node.value) if node.value is not None else None
        self.bind(node.target, kind)

    def visit_target(self, t: ast.AST) -> None:
        """Attribute or subscript targets read their base (x.attr = ... uses x)."""
        if isinstance(t, (ast.Attribute, ast.Subscript)):
            self.typeof(t.value)

    def visit_For(self, node: ast.For) -> None:
        it = node.iter
        kind = None
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "zip":
            kind = ("tuple", [self._elem(self.typeof(a)) for a in it.args])
        else:
            kind = self._elem(self.typeof(it))
        self.bind(node.target, kind)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            kind = self.typeof(item.context_expr)
            if item.optional_vars is not None:
                self.bind(item.optional_vars, kind)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Expr(self, node: ast.Expr) -> None:
        self.typeof(node.value)

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None:
            self.typeof(node.value)

    def generic_visit(self, node: ast.AST) -> None:
        # Expressions are evaluated through typeof (which records uses); statements recurse.
        if isinstance(node, ast.expr):
            self.typeof(node)
            return
        super().generic_visit(node)

    @staticmethod
    def _elem(kind: Any) -> Any:
        if kind and kind[0] == "list":
            return ("obj", kind[1])
        return None

    # ---- expressions

    def typeof(self, node: Optional[ast.AST]) -> Any:
        """What `node` evaluates to (("path", p), ("obj", cls), ("list", cls), ("tuple", [..]) or None), recording
        every torch or NVML name it uses on the way."""
        if node is None:
            return None
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.Attribute):
            base = self.typeof(node.value)
            if node.attr.startswith("nvml") and NVML_NAME.match(node.attr):
                self.use_nvml(node.attr, node)
                return None
            if base and base[0] == "path":
                path = f"{base[1]}.{node.attr}"
                self.use_torch(path, node)
                return ("path", path)
            if base and base[0] == "obj":
                path = f"{base[1]}.{node.attr}"
                self.use_torch(path, node)
                return ("path", path)
            return None
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            base = self.typeof(node.value)
            self.typeof(node.slice)
            if base and base[0] == "obj" and base[1] == TENSOR:
                return base
            if base and base[0] == "list":
                return ("obj", base[1])
            if base and base[0] == "tuple" and isinstance(node.slice, ast.Constant) \
                    and isinstance(node.slice.value, int) and node.slice.value < len(base[1]):
                return base[1][node.slice.value]
            return None
        if isinstance(node, ast.Tuple):
            self.record_name_list(node)
            return ("tuple", [self.typeof(e) for e in node.elts])
        if isinstance(node, (ast.List, ast.Set)):
            self.record_name_list(node)
            for e in node.elts:
                self.typeof(e)
            return None
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
            self.scopes.append({})
            for gen in node.generators:
                self.bind(gen.target, self._elem(self.typeof(gen.iter)))
                for cond in gen.ifs:
                    self.typeof(cond)
            elt = self.typeof(node.elt)
            self.scopes.pop()
            if elt and elt[0] == "obj":
                return ("list", elt[1])
            return None
        if isinstance(node, ast.DictComp):
            self.scopes.append({})
            for gen in node.generators:
                self.bind(gen.target, self._elem(self.typeof(gen.iter)))
            self.typeof(node.key)
            self.typeof(node.value)
            self.scopes.pop()
            return None
        if isinstance(node, ast.Lambda):
            self.visit_Lambda(node)
            return None
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and NVML_NAME.match(node.value) and \
                    (node.lineno, node.col_offset) not in self._nvml_seen:
                self.use_nvml(node.value, node)
            return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            left = self.typeof(node.left)
            self.typeof(node.right)
            if left and left[0] == "obj" and left[1] == TENSOR:
                self.use_torch(f"{TENSOR}.__matmul__", node)
                return left
            return None
        if isinstance(node, ast.NamedExpr):
            kind = self.typeof(node.value)
            self.bind(node.target, kind)
            return kind
        for child in ast.iter_child_nodes(node):
            self.typeof(child) if isinstance(child, ast.expr) else self.generic_visit(child)
        return None

    def call(self, node: ast.Call) -> Any:
        func = node.func
        # The NVML seam's string-named calls.
        if isinstance(func, ast.Attribute) and func.attr in ("call", "first", "function") and node.args:
            first = node.args[0]
            if func.attr in ("call", "function") and isinstance(first, ast.Constant) and isinstance(first.value, str) \
                    and NVML_NAME.match(first.value):
                shape = _shape(node, skip=1, drop_kw=("default",)) if func.attr == "call" else None
                self.use_nvml(first.value, first, call=shape)
            elif func.attr == "first" and isinstance(first, (ast.List, ast.Tuple)):
                self.record_name_list(first, call=_shape(node, skip=1, drop_kw=("default",)))
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            base = self.typeof(node.args[0])
            name = node.args[1].value
            for a in node.args[2:]:
                self.typeof(a)
            if NVML_NAME.match(name):
                self.use_nvml(name, node.args[1])
                return None
            if base and base[0] in ("path", "obj"):
                path = f"{base[1]}.{name}"
                self.use_torch(path, node)
                return ("path", path)
            return None
        # getattr(obj, k) over a literal tuple of names: `[getattr(props, k, None) for k in ("a", "b")]`
        kind = self.typeof(func)
        for a in node.args:
            self.typeof(a.value if isinstance(a, ast.Starred) else a)
        for k in node.keywords:
            self.typeof(k.value)
        if kind and kind[0] == "path":
            path = kind[1]
            if path.startswith("torch"):
                self.use_torch(path, node, call=_shape(node))
                if path in RETURNS:
                    return ("obj", RETURNS[path])
                if path.startswith("torch.") and path.rsplit(".", 1)[0] in ("torch.cuda",) and path.endswith("Stream"):
                    return ("obj", "torch.cuda.Stream")
            return None
        return None

    # ---- recording

    def use_torch(self, path: str, node: ast.AST, call: Optional[Tuple[int, Tuple[str, ...]]] = None) -> None:
        self.uses.append(Use("torch", path, self.rel, getattr(node, "lineno", 0), call=call))

    def use_nvml(self, name: str, node: ast.AST, call: Optional[Tuple[int, Tuple[str, ...]]] = None,
                 fallbacks: Tuple[str, ...] = ()) -> None:
        self._nvml_seen.add((getattr(node, "lineno", 0), getattr(node, "col_offset", 0)))
        self.uses.append(Use("pynvml", f"pynvml.{name}", self.rel, getattr(node, "lineno", 0), call=call,
                             fallbacks=fallbacks))

    def record_name_list(self, node: ast.AST, call: Optional[Tuple[int, Tuple[str, ...]]] = None) -> None:
        """A list/tuple literal of NVML names: a fallback list when it has several."""
        elts = getattr(node, "elts", [])
        names = [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                 and NVML_NAME.match(e.value)]
        if not names:
            return
        group = tuple(names) if len(names) > 1 else ()
        for e in elts:
            if isinstance(e, ast.Constant) and isinstance(e.value, str) and NVML_NAME.match(e.value) \
                    and (e.lineno, e.col_offset) not in self._nvml_seen:
                self.use_nvml(e.value, e, call=call, fallbacks=group)

    def record_constant(self, name: str, value: ast.AST, node: ast.AST) -> None:
        if isinstance(value, ast.Constant) and isinstance(value.value, int):
            self.uses.append(Use("pynvml", f"pynvml.{name}", self.rel, node.lineno, value=value.value))



def uses_in(path: str, root: str = ROOT) -> List[Use]:
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=rel)
    w = _Walker(rel)
    for stmt in tree.body:
        w.visit(stmt)
    return w.uses


def all_uses(root: str = ROOT) -> List[Use]:
    out: List[Use] = []
    for path in source_files(root):
        out.extend(uses_in(path, root))
    return out
