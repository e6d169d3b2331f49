"""Bad configurations: each one gives exactly the expected problem lines, never a traceback."""

from __future__ import annotations

import pytest

from llama_swap_trio.config import ConfigError, load_config_text

# A valid model, to which a case appends keys; its cmd uses ${PORT} so the default proxy works.
M = '[models.m]\ncmd = "srv --port ${PORT}"\n'
N = '[models.n]\ncmd = "srv --port ${PORT}"\n'


def problems_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, environ={} if environ is None else environ)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


CASES: list[tuple[str, str, str]] = [
    # -- wrong types --
    ("int_given_str", M + 'ttl = "300"', "models.m.ttl: expected int, got str '300'"),
    ("int_given_float", M + "ttl = 3.9", "models.m.ttl: expected int, got float 3.9"),
    ("int_given_bool", M + "ttl = true", "models.m.ttl: expected int, got bool true"),
    (
        "bool_given_str",
        M + 'unlisted = "false"',
        "models.m.unlisted: expected bool, got str 'false'",
    ),
    ("list_given_str", M + 'aliases = "abc"', "models.m.aliases: expected an array, got str 'abc'"),
    (
        "top_int_given_str",
        'health_check_timeout = "5"',
        "health_check_timeout: expected int, got str '5'",
    ),
    ("top_int_given_float", "start_port = 1.5", "start_port: expected int, got float 1.5"),
    (
        "float_given_str",
        M + 'timeouts.connect = "5"',
        "models.m.timeouts.connect: expected float, got str '5'",
    ),
    (
        "float_given_bool",
        M + "timeouts.connect = true",
        "models.m.timeouts.connect: expected float, got bool true",
    ),
    (
        "list_item_given_int",
        'api_keys = ["a", 1]',
        "api_keys[1]: expected str, got int 1",
    ),
    (
        "env_list_item_without_equals",
        M + 'env = ["A"]',
        "models.m.env[0]: expected a \"NAME=value\" string, got str 'A'",
    ),
    ("env_table_value_int", M + "env = {A = 1}", "models.m.env.A: expected str, got int 1"),
    ("models_not_a_table", "models = 5", "models: expected a table, got int 5"),
    ("model_not_a_table", "[models]\nm = 5", "models.m: expected a table, got int 5"),
    ("routing_not_a_table", "routing = 5", "routing: expected a table, got int 5"),
    # -- unknown keys --
    ("unknown_top_key_without_hint", "bogus = {}", "bogus: unknown key"),
    (
        "unknown_top_key_with_hint",
        'log_levl = "info"',
        "log_levl: unknown key (did you mean 'log_level'?)",
    ),
    (
        "unknown_model_key_with_hint",
        M + 'chek_endpoint = "/h"',
        "models.m.chek_endpoint: unknown key (did you mean 'check_endpoint'?)",
    ),
    ("unknown_model_key_without_hint", M + "zzz = 1", "models.m.zzz: unknown key"),
    (
        "unknown_group_key",
        M + "[routing.groups.g]\nmembers = []\nswapp = true",
        "routing.groups.g.swapp: unknown key (did you mean 'swap'?)",
    ),
    (
        "unknown_filters_key",
        M + 'filters.strip_param = "a"',
        "models.m.filters.strip_param: unknown key (did you mean 'strip_params'?)",
    ),
    (
        "unknown_timeouts_key",
        M + "timeouts.conect = 1",
        "models.m.timeouts.conect: unknown key (did you mean 'connect'?)",
    ),
    # -- commands --
    ("missing_cmd", '[models.m]\nproxy = "http://h"', "models.m.cmd: required key is missing"),
    ("empty_cmd", '[models.m]\ncmd = ""\nproxy = "http://h"', "models.m.cmd: must not be empty"),
    (
        "cmd_of_only_comments",
        '[models.m]\ncmd = """\n  # --only a comment\n"""\nproxy = "http://h"',
        "models.m.cmd: must not be empty",
    ),
    (
        "cmd_with_unbalanced_quote",
        '[models.m]\ncmd = "a \'b"\nproxy = "http://h"',
        "models.m.cmd: cannot be split into words: No closing quotation",
    ),
    (
        "cmd_with_a_nul_byte",
        '[models.m]\ncmd = "srv\\u0000x"\nproxy = "http://h"',
        "models.m.cmd: must not contain control characters (found U+0000); "
        "only tab and newline are allowed",
    ),
    (
        "cmd_with_an_escape_character",
        '[models.m]\ncmd = "srv \\u001b[31m"\nproxy = "http://h"',
        "models.m.cmd: must not contain control characters (found U+001B); "
        "only tab and newline are allowed",
    ),
    (
        "cmd_stop_with_a_nul_byte",
        M + 'cmd_stop = "kill\\u0000 ${PID}"',
        "models.m.cmd_stop: must not contain control characters (found U+0000); "
        "only tab and newline are allowed",
    ),
    # -- aliases --
    (
        "duplicate_alias_names_both_models",
        M + 'aliases = ["x"]\n' + N + 'aliases = ["x"]',
        "models.n.aliases[0]: alias 'x' is claimed by models 'm' and 'n'",
    ),
    (
        "alias_equal_to_a_model_id",
        M + 'aliases = ["n"]\n' + N,
        "models.m.aliases[0]: alias 'n' is also a model id",
    ),
    (
        "set_params_by_id_key_is_another_model_id",
        M + "filters.set_params_by_id = {n = {a = 1}}\n" + N,
        "models.m.filters.set_params_by_id.n: key 'n' is also a model id",
    ),
    (
        "set_params_by_id_key_is_another_models_alias",
        M + "filters.set_params_by_id = {x = {a = 1}}\n" + N + 'aliases = ["x"]',
        "models.n.aliases[0]: alias 'x' is claimed by models 'm' and 'n'",
    ),
    # -- macros --
    (
        "unknown_macro_names_model_and_key",
        M + 'name = "a ${nope}"',
        "models.m.name: unknown macro '${nope}'",
    ),
    (
        "forward_referenced_macro",
        '[macros]\na = "${b}"\nb = "x"',
        "macros.a: macro 'a' uses '${b}', which is defined after it; "
        "a macro may only use macros defined before it",
    ),
    ("self_referencing_macro", '[macros]\na = "x${a}"', "macros.a: macro 'a' refers to itself"),
    (
        "reserved_macro_name",
        "[macros]\nPORT = 1",
        "macros.PORT: 'PORT' is a reserved macro name and cannot be defined",
    ),
    (
        "reserved_model_macro_name",
        M + "macros.MODEL_ID = 1",
        "models.m.macros.MODEL_ID: 'MODEL_ID' is a reserved macro name and cannot be defined",
    ),
    (
        "bad_macro_name",
        '[macros]\n"bad name" = 1',
        'macros."bad name": macro names must match ^[A-Za-z0-9_-]{1,63}$',
    ),
    (
        "non_scalar_macro_value",
        "[macros]\na = [1]",
        "macros.a: macro values must be a string, int, float or bool, got array",
    ),
    (
        "unset_env_variable",
        M + 'name = "${env.NOPE}"',
        "models.m.name: environment variable 'NOPE' is not set",
    ),
    (
        "pid_outside_cmd_stop",
        M + 'name = "${PID}"',
        "models.m.name: ${PID} is only available in cmd_stop",
    ),
    (
        "port_in_proxy_only",
        '[models.m]\ncmd = "srv"\nproxy = "http://127.0.0.1:${PORT}"',
        "models.m.proxy: proxy uses ${PORT} but cmd does not; "
        "a model gets a port only when its cmd uses ${PORT}",
    ),
    (
        "default_proxy_needs_port_in_cmd",
        '[models.m]\ncmd = "srv"',
        "models.m.proxy: not set, and the default 'http://127.0.0.1:${PORT}' needs ${PORT} in cmd",
    ),
    (
        "port_in_metadata_without_port_in_cmd",
        '[models.m]\ncmd = "srv"\nproxy = "http://h"\nmetadata.p = "${PORT}"',
        "models.m.metadata.p: ${PORT} is only available when cmd uses ${PORT}",
    ),
    (
        "model_id_in_global_value",
        'api_keys = ["${MODEL_ID}"]',
        "api_keys[0]: ${MODEL_ID} is only available in a model's settings",
    ),
    (
        "typed_macro_checked_as_its_type",
        '[macros]\nt = "sixty"\n' + M + 'ttl = "${t}"',
        "models.m.ttl: expected int, got str 'sixty'",
    ),
    # -- groups --
    (
        "group_member_unknown",
        M + '[routing.groups.g]\nmembers = ["zz"]',
        "routing.groups.g.members[0]: unknown model 'zz'",
    ),
    (
        "group_member_is_an_alias",
        M + 'aliases = ["q"]\n[routing.groups.g]\nmembers = ["q"]',
        "routing.groups.g.members[0]: unknown model 'q' ('q' is an alias of 'm')",
    ),
    (
        "member_in_two_groups",
        M + '[routing.groups.g]\nmembers = ["m"]\n[routing.groups.h]\nmembers = ["m"]',
        "routing.groups.h.members[0]: model 'm' is already in group 'g'",
    ),
    (
        "member_repeated_in_a_group",
        M + '[routing.groups.g]\nmembers = ["m", "m"]',
        "routing.groups.g.members[1]: 'm' is listed twice in this group",
    ),
    # -- matrix --
    (
        "matrix_operator_without_operand",
        M + '[routing.matrix]\nsets = {s = "m &"}',
        "routing.matrix.sets.s: expression ends where a name, '(' or '+set' was expected",
    ),
    (
        "matrix_missing_paren",
        M + '[routing.matrix]\nsets = {s = "(m"}',
        "routing.matrix.sets.s: missing ')' for the '(' at column 1",
    ),
    (
        "matrix_unexpected_character",
        M + '[routing.matrix]\nsets = {s = "m ! x"}',
        "routing.matrix.sets.s: unexpected character '!' at column 3",
    ),
    (
        "matrix_empty_expression",
        M + '[routing.matrix]\nsets = {s = "  "}',
        "routing.matrix.sets.s: empty expression",
    ),
    (
        "matrix_plus_without_name",
        M + '[routing.matrix]\nsets = {s = "m | +"}',
        "routing.matrix.sets.s: '+' at column 5 must be followed by a set name",
    ),
    (
        "matrix_stray_close_paren",
        M + '[routing.matrix]\nsets = {s = "m )"}',
        "routing.matrix.sets.s: unexpected ')' at column 3",
    ),
    (
        "matrix_unknown_name",
        M + '[routing.matrix]\nsets = {s = "m & zz"}',
        "routing.matrix.sets.s: unknown var or model 'zz'",
    ),
    (
        "matrix_undefined_set",
        M + '[routing.matrix]\nsets = {s = "+t"}',
        "routing.matrix.sets.s: references undefined set 't'",
    ),
    (
        "matrix_cycle",
        M + '[routing.matrix]\nsets = {a = "+b", b = "m | +a"}',
        "routing.matrix.sets.a: circular reference: a -> b -> a",
    ),
    (
        "matrix_bad_evict_cost",
        M + '[routing.matrix]\nsets = {a = "m"}\nevict_costs = {m = 0}',
        "routing.matrix.evict_costs.m: must be a positive integer, got 0",
    ),
    (
        "matrix_evict_cost_unknown_name",
        M + '[routing.matrix]\nsets = {a = "m"}\nevict_costs = {zz = 3}',
        "routing.matrix.evict_costs.zz: unknown var or model 'zz'",
    ),
    (
        "matrix_var_unknown_model",
        M + '[routing.matrix]\nvars = {v = "zz"}\nsets = {a = "m"}',
        "routing.matrix.vars.v: unknown model 'zz'",
    ),
    (
        "matrix_without_sets",
        M + "[routing.matrix]\nsets = {}",
        "routing.matrix.sets: at least one set is required",
    ),
    (
        "matrix_router_without_matrix",
        M + '[routing]\nrouter = "matrix"',
        "routing.matrix: is missing; router = 'matrix' needs it",
    ),
    # -- references --
    (
        "priority_unknown",
        M + "[routing.priority]\nzz = 1",
        "routing.priority.zz: unknown model or alias 'zz'",
    ),
    (
        "preload_unknown",
        M + '[hooks.on_startup]\npreload = ["zz"]',
        "hooks.on_startup.preload[0]: unknown model or alias 'zz'",
    ),
    (
        "bad_ignore_path_regex",
        '[upstream]\nignore_paths = ["("]',
        "upstream.ignore_paths[0]: invalid regular expression '(': "
        "missing ), unterminated subpattern at position 0",
    ),
    # -- enums --
    (
        "bad_log_level",
        'log_level = "verbose"',
        "log_level: must be one of 'debug', 'info', 'warn', 'error', got 'verbose'",
    ),
    (
        "bad_log_to_stdout",
        'log_to_stdout = "all"',
        "log_to_stdout: must be one of 'proxy', 'upstream', 'both', 'none', got 'all'",
    ),
    (
        "bad_router",
        '[routing]\nrouter = "fifo"',
        "routing.router: must be one of 'group', 'matrix', got 'fifo'",
    ),
    # -- ranges --
    (
        "health_check_timeout_zero",
        "health_check_timeout = 0",
        "health_check_timeout: must be >= 1, got 0",
    ),
    ("start_port_zero", "start_port = 0", "start_port: must be between 1 and 65535, got 0"),
    (
        "start_port_too_big",
        "start_port = 70000",
        "start_port: must be between 1 and 65535, got 70000",
    ),
    ("global_ttl_negative", "global_ttl = -1", "global_ttl: must be >= 0, got -1"),
    ("unload_timeout_negative", "unload_timeout = -1", "unload_timeout: must be >= 0, got -1"),
    ("model_ttl_below_minus_one", M + "ttl = -2", "models.m.ttl: must be >= -1, got -2"),
    (
        "concurrency_limit_negative",
        M + "concurrency_limit = -1",
        "models.m.concurrency_limit: must be >= 0, got -1",
    ),
    (
        "timeout_negative",
        M + "timeouts.response_header = -1",
        "models.m.timeouts.response_header: must be >= 0, got -1.0",
    ),
    (
        "ports_run_past_65535",
        "start_port = 65535\n" + M + N,
        "start_port: 2 models use ${PORT} from 65535, which reaches port 65536, beyond 65535",
    ),
    # -- values --
    (
        "model_id_with_a_space_is_quoted",
        '[models."a b"]\ncmd = "x"\nproxy = "http://h"',
        'models."a b": model ids may only contain letters, digits and / . : - _',
    ),
    (
        "quoted_model_id_in_path",
        '[models."org/m:q4"]\ncmd = "x"\nproxy = "http://h"\nttl = "x"',
        "models.\"org/m:q4\".ttl: expected int, got str 'x'",
    ),
    ("empty_api_key", 'api_keys = [""]', "api_keys[0]: must not be empty"),
    ("api_key_with_space", 'api_keys = ["a b"]', "api_keys[0]: must not contain spaces"),
    (
        "proxy_not_http",
        M + 'proxy = "ftp://x"',
        "models.m.proxy: must be an http:// or https:// URL, got 'ftp://x'",
    ),
    (
        "strip_params_touches_model",
        M + 'filters.strip_params = "a, model"',
        "models.m.filters.strip_params: must not contain 'model': the proxy routes on the "
        "request's model itself (use use_model_name to rewrite it)",
    ),
    (
        "set_params_touches_model",
        M + 'filters.set_params = {model = "x"}',
        "models.m.filters.set_params.model: must not be set: the proxy routes on the "
        "request's model itself (use use_model_name to rewrite it)",
    ),
    (
        "check_endpoint_not_a_path",
        M + 'check_endpoint = "health"',
        "models.m.check_endpoint: must be 'none' or a path starting with '/'",
    ),
    # -- syntax --
    ("toml_syntax_error", "a = 1\nb = = 2", "line 2, column 5: Invalid value"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_reports_exactly_one_problem_line(text: str, expected: str) -> None:
    # given a config with one mistake / when it is loaded / then one line names key and problem
    assert problems_of(text) == [f"config.toml: {expected}"]


def test_several_problems_are_reported_in_one_load() -> None:
    text = (
        'log_level = "loud"\n'
        '[models.m]\ncmd = "srv ${PORT}"\nttl = "300"\nchek_endpoint = "x"\n'
        '[routing.groups.g]\nmembers = ["zz"]\nexclusiv = true\n'
        "[routing.priority]\nm = 1\nq = 2\n"
    )
    assert problems_of(text) == [
        "config.toml: models.m.ttl: expected int, got str '300'",
        "config.toml: models.m.chek_endpoint: unknown key (did you mean 'check_endpoint'?)",
        "config.toml: routing.groups.g.exclusiv: unknown key (did you mean 'exclusive'?)",
        "config.toml: log_level: must be one of 'debug', 'info', 'warn', 'error', got 'loud'",
        # the misspelt key of group g no longer hides the problem of its members
        "config.toml: routing.groups.g.members[0]: unknown model 'zz'",
        "config.toml: routing.priority.q: unknown model or alias 'q'",
    ]


def test_an_unknown_key_does_not_hide_the_other_problems_of_its_table() -> None:
    text = 'global_ttl = -5\nbogus_key = 1\n[models.m]\ncmd = "srv ${PORT}"\nttl = -7\nnope = 1\n'
    assert problems_of(text) == [
        "config.toml: bogus_key: unknown key",
        "config.toml: models.m.nope: unknown key",
        "config.toml: models.m.ttl: must be >= -1, got -7",
        "config.toml: global_ttl: must be >= 0, got -5",
    ]


def test_problems_across_top_level_models_and_macros_come_together() -> None:
    text = (
        'log_level = "loud"\nstart_port = 0\n[macros]\nPID = 1\n'
        '[models.a]\ncmd = "srv ${PORT} ${nope}"\n'
        '[models.b]\ncmd = "srv ${PORT}"\naliases = ["a"]\n'
    )
    assert problems_of(text) == [
        "config.toml: macros.PID: 'PID' is a reserved macro name and cannot be defined",
        "config.toml: models.a.cmd: unknown macro '${nope}'",
        "config.toml: models.b.aliases[0]: alias 'a' is also a model id",
        "config.toml: start_port: must be between 1 and 65535, got 0",
        "config.toml: log_level: must be one of 'debug', 'info', 'warn', 'error', got 'loud'",
    ]


def test_a_failed_macro_is_reported_once_not_echoed_as_a_type_error() -> None:
    assert problems_of(M + 'ttl = "${nope}"') == [
        "config.toml: models.m.ttl: unknown macro '${nope}'"
    ]


def test_a_broken_global_macro_is_reported_at_its_definition_only() -> None:
    text = '[macros]\nflags = "-x ${nope}"\n' + M.replace("srv", "srv ${flags}") + N
    assert problems_of(text) == ["config.toml: macros.flags: unknown macro '${nope}'"]


def test_two_set_params_by_id_keys_becoming_the_same_name_are_an_error() -> None:
    text = (
        '[macros]\nk = "fast"\n'
        + M
        + 'filters.set_params_by_id = {"${k}" = {a = 1}, fast = {a = 2}}'
    )
    assert problems_of(text) == [
        "config.toml: models.m.filters.set_params_by_id.fast: "
        "keys '${k}' and 'fast' both become 'fast'"
    ]


def test_the_path_given_names_the_file_in_every_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text('log_level = "x"\nglobal_ttl = -1', path="/etc/lst.toml", environ={})
    assert all(line.startswith("/etc/lst.toml: ") for line in caught.value.problems)
    assert len(caught.value.problems) == 2
