"""The ``[routing.matrix]`` set DSL (SPEC 2.3): parsing, name resolution and expansion.

Grammar (``&`` binds tighter than ``|``)::

    expr   := term ("|" term)*
    term   := factor ("&" factor)*
    factor := NAME | "+" NAME | "(" expr ")"
    NAME   := [A-Za-z0-9_.-]+

A ``NAME`` is a var (preferred) or a model id; ``+NAME`` inlines another set. Each set expands to
its alternatives, the model sets that may run together: ``(a | b) & c`` -> ``{a, c}``, ``{b, c}``.
The solver (routing) tries them in the order produced here: sets that others reference come
before the sets referencing them, otherwise declaration order (llama-swap's topological order).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import attrs

from llama_swap_trio.config.model import MatrixConfig, MatrixSet
from llama_swap_trio.config.problems import KeyPath, Problems
from llama_swap_trio.config.schema import RawMatrix

IDENTIFIER = re.compile(r"[A-Za-z0-9_.-]+")
#: A set expanding to more alternatives than this is refused rather than eating the memory.
MAX_ALTERNATIVES = 10_000


class DSLError(Exception):
    """A syntax error in one set's expression; the message says what and where."""


@attrs.frozen
class Leaf:
    name: str


@attrs.frozen
class Ref:
    set_name: str


@attrs.frozen
class And:
    parts: tuple[Node, ...]


@attrs.frozen
class Or:
    parts: tuple[Node, ...]


Node = Leaf | Ref | And | Or


@attrs.frozen
class _Token:
    kind: str  # "name" or the operator character
    text: str
    column: int  # 1-based, for messages


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "&|()+":
            tokens.append(_Token(char, char, i + 1))
            i += 1
        elif match := IDENTIFIER.match(text, i):
            tokens.append(_Token("name", match.group(), i + 1))
            i = match.end()
        else:
            raise DSLError(f"unexpected character {char!r} at column {i + 1}")
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise DSLError("empty expression")
        node = self.expr()
        extra = self.peek()
        if extra is not None:
            raise DSLError(f"unexpected {extra.text!r} at column {extra.column}")
        return node

    def expr(self) -> Node:
        parts = [self.term()]
        while (token := self.peek()) is not None and token.kind == "|":
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def term(self) -> Node:
        parts = [self.factor()]
        while (token := self.peek()) is not None and token.kind == "&":
            self.take()
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def factor(self) -> Node:
        token = self.peek()
        if token is None:
            raise DSLError("expression ends where a name, '(' or '+set' was expected")
        self.take()
        if token.kind == "name":
            return Leaf(token.text)
        if token.kind == "+":
            name = self.peek()
            if name is None or name.kind != "name":
                raise DSLError(f"'+' at column {token.column} must be followed by a set name")
            return Ref(self.take().text)
        if token.kind == "(":
            inner = self.expr()
            close = self.peek()
            if close is None or close.kind != ")":
                raise DSLError(f"missing ')' for the '(' at column {token.column}")
            self.take()
            return inner
        raise DSLError(
            f"unexpected {token.text!r} at column {token.column}; expected a name, '(' or '+set'"
        )


def parse_dsl(text: str) -> Node:
    """The syntax tree of one set expression. Raises :class:`DSLError`."""
    return _Parser(text).parse()


def _walk(node: Node, visit: Callable[[Node], None]) -> None:
    visit(node)
    if isinstance(node, And | Or):
        for part in node.parts:
            _walk(part, visit)


class _TooMany(Exception):
    pass


def _dedupe(alternatives: list[frozenset[str]]) -> list[frozenset[str]]:
    return list(dict.fromkeys(alternatives))


def _expand(
    node: Node, resolve: Mapping[str, str], expanded_sets: Mapping[str, list[frozenset[str]]]
) -> list[frozenset[str]]:
    if isinstance(node, Leaf):
        return [frozenset({resolve[node.name]})]
    if isinstance(node, Ref):
        return expanded_sets[node.set_name]
    if isinstance(node, Or):
        return _dedupe(
            [alt for part in node.parts for alt in _expand(part, resolve, expanded_sets)]
        )
    result: list[frozenset[str]] = [frozenset()]
    for part in node.parts:
        options = _expand(part, resolve, expanded_sets)
        if len(result) * len(options) > MAX_ALTERNATIVES * 4:
            raise _TooMany
        result = _dedupe([left | right for left in result for right in options])
        if len(result) > MAX_ALTERNATIVES:
            raise _TooMany
    return result


def build_matrix(
    raw: RawMatrix,
    model_ids: Mapping[str, object],
    aliases: Mapping[str, str],
    problems: Problems,
    path: KeyPath = ("routing", "matrix"),
) -> MatrixConfig | None:
    """Check and expand ``[routing.matrix]``; None when it has problems (all reported)."""
    count = len(problems)

    def unknown_model(name: str) -> str:
        hint = f" ('{name}' is an alias of '{aliases[name]}')" if name in aliases else ""
        return f"unknown model '{name}'{hint}"

    variables: dict[str, str] = {}
    for var, target in raw.vars.items():
        if not IDENTIFIER.fullmatch(var):
            problems.add(
                (*path, "vars", var),
                "var names may only contain letters, digits, '_', '-' and '.'",
            )
        elif target not in model_ids:
            problems.add((*path, "vars", var), unknown_model(target))
        else:
            variables[var] = target

    def resolve_name(name: str) -> str | None:
        if name in variables:
            return variables[name]
        if name in model_ids and name not in raw.vars:
            return name
        return None

    costs: dict[str, int] = {}
    cost_from: dict[str, str] = {}
    for key, cost in raw.evict_costs.items():
        where = (*path, "evict_costs", key)
        model_id = resolve_name(key)
        if model_id is None:
            if key not in raw.vars:  # a bad var was reported above
                problems.add(where, f"unknown var or model '{key}'")
        elif cost < 1:
            problems.add(where, f"must be a positive integer, got {cost}")
        elif model_id in costs:
            problems.add(
                where, f"model '{model_id}' already has a cost (from '{cost_from[model_id]}')"
            )
        else:
            costs[model_id] = cost
            cost_from[model_id] = key

    if not raw.sets:
        problems.add((*path, "sets"), "at least one set is required")
        return None

    trees: dict[str, Node] = {}
    deps: dict[str, list[str]] = {}
    resolved: dict[str, str] = {}
    for set_name, dsl in raw.sets.items():
        where = (*path, "sets", set_name)
        try:
            tree = parse_dsl(dsl)
        except DSLError as exc:
            problems.add(where, str(exc))
            continue
        refs: list[str] = []

        def check(node: Node, where: KeyPath = where, refs: list[str] = refs) -> None:
            if isinstance(node, Leaf):
                model_id = resolve_name(node.name)
                if model_id is not None:
                    resolved[node.name] = model_id
                elif node.name not in raw.vars:  # a bad var was reported above
                    problems.add(where, f"unknown var or model '{node.name}'")
            elif isinstance(node, Ref):
                if node.set_name not in raw.sets:
                    problems.add(where, f"references undefined set '{node.set_name}'")
                elif node.set_name not in refs:
                    refs.append(node.set_name)

        _walk(tree, check)
        trees[set_name] = tree
        deps[set_name] = refs

    order = _topological_order(list(raw.sets), deps, path, problems)
    if len(problems) > count:
        return None

    expanded: dict[str, list[frozenset[str]]] = {}
    sets: list[MatrixSet] = []
    for set_name in order:
        try:
            expanded[set_name] = _expand(trees[set_name], resolved, expanded)
        except _TooMany:
            problems.add(
                (*path, "sets", set_name), f"expands to more than {MAX_ALTERNATIVES} alternatives"
            )
            return None
        dsl = raw.sets[set_name]
        sets.extend(MatrixSet(set_name, dsl, models) for models in expanded[set_name])
    return MatrixConfig(
        sets=tuple(sets), evict_costs={model_id: costs.get(model_id, 1) for model_id in model_ids}
    )


def _topological_order(
    names: list[str], deps: Mapping[str, list[str]], path: KeyPath, problems: Problems
) -> list[str]:
    """Referenced sets before referencing ones, else declaration order; cycles are reported."""
    state: dict[str, int] = {}  # 1 = being visited, 2 = done
    order: list[str] = []
    stack: list[str] = []

    def visit(name: str) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*stack[stack.index(name) :], name]
            problems.add((*path, "sets", name), f"circular reference: {' -> '.join(cycle)}")
            return
        state[name] = 1
        stack.append(name)
        for dep in deps.get(name, []):
            visit(dep)
        stack.pop()
        state[name] = 2
        order.append(name)

    for name in names:
        visit(name)
    return order
