"""``ProjectConfig``: confide.toml and Cosmian's mse.toml, and every way they can be wrong."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.client import ProjectConfig
from confide.errors import UsageError
from confide.wire import MAX_CERTIFICATE_CHAIN

NOW = datetime(2026, 1, 1, tzinfo=UTC)

GOOD = """\
name = "hello"
python_application = "app:app"
healthcheck_endpoint = "/health"
tests_cmd = "pytest -q"
tests_requirements = ["pytest>=8,<10", "httpx>=0.27,<1"]

[cloud]
code = "src"
tests = "tests"
project = "default"
hardware = "small"
secrets = "secrets.json"
"""

SSL = """\
[cloud.ssl]
domain_name = "app.example.com"
private_key = "key.pem"
certificate = "cert.pem"
"""

#: A Cosmian mse-cli project file, as its scaffold writes it (with the docker key we do not use).
COSMIAN_MSE_TOML = """\
name = "example"
python_application = "app:app"
healthcheck_endpoint = "/health"
tests_cmd = "pytest"
tests_requirements = [
    "cryptography",
    "intel-sgx-ra",
    "pytest==7.2.0",
]

[cloud]
code = "mse_src"
tests = "tests"
docker = "ghcr.io/cosmian/mse-flask:20230710125733"
project = "default"
hardware = "4g-eu-001"
"""


# -- test data: certificates made here, relative to NOW ----------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption = BestAvailableEncryption(password) if password else NoEncryption()
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)


def _cert(
    key: ec.EllipticCurvePrivateKey,
    names: list[str] | None,
    *,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=90),
) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if names is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)


def _make_project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("app = object()\n")
    (root / "src" / "pkg").mkdir()
    (root / "src" / "pkg" / "__init__.py").write_text("app = object()\n")
    (root / "src" / "pkg" / "web.py").write_text("app = object()\n")
    (root / "tests").mkdir()
    (root / "secrets.json").write_text('{"api_token": "t"}')
    (root / "bad.json").write_text("{")
    (root / "list.json").write_text("[1, 2]")
    key = _key()
    (root / "key.pem").write_bytes(_pem_key(key))
    (root / "cert.pem").write_bytes(_cert(key, ["*.example.com", "example.com"]))
    (root / "encrypted.pem").write_bytes(_pem_key(key, b"pw"))
    (root / "other-key.pem").write_bytes(_pem_key(_key()))
    (root / "expired.pem").write_bytes(
        _cert(key, ["app.example.com"], not_after=NOW - timedelta(days=1))
    )
    (root / "future.pem").write_bytes(
        _cert(key, ["app.example.com"], not_before=NOW + timedelta(days=1))
    )
    (root / "nosan.pem").write_bytes(_cert(key, None))
    # The leaf and more intermediates than the operator accepts (MAX_CERTIFICATE_CHAIN).
    extra = b"".join(_cert(_key(), None) for _ in range(MAX_CERTIFICATE_CHAIN))
    (root / "long.pem").write_bytes(_cert(key, ["app.example.com"]) + extra)
    (root / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _make_project(tmp_path / "hello")


def _load(root: Path, text: str, name: str = "confide.toml") -> ProjectConfig:
    path = root / name
    path.write_text(text)
    return ProjectConfig.load(path, now=NOW)


# -- valid files -----------------------------------------------------------------------------


def test_a_good_file(project: Path) -> None:
    config = _load(project, GOOD)
    assert config.path == project / "confide.toml"
    assert config.name == "hello"
    assert (config.python_module, config.python_attribute) == ("app", "app")
    assert config.healthcheck_endpoint == "/health"
    assert config.tests_argv == ("pytest", "-q")
    assert config.tests_requirements == ("pytest>=8,<10", "httpx>=0.27,<1")
    assert config.cloud.code == project / "src"
    assert config.cloud.tests == project / "tests"
    assert config.cloud.secrets == project / "secrets.json"
    assert (config.cloud.project, config.cloud.hardware) == ("default", "small")
    assert config.cloud.expiration_date is None
    assert config.ssl is None
    assert config.warnings == ()


def test_the_model_is_frozen(project: Path) -> None:
    config = _load(project, GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "other"  # type: ignore[misc]


def test_paths_are_relative_to_the_file_not_the_working_directory(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (project / "confide.toml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    config = ProjectConfig.load(Path("hello"), now=NOW)
    assert config.cloud.code == project / "src"


def test_a_cosmian_mse_toml_loads_with_its_docker_image(project: Path) -> None:
    (project / "src").rename(project / "mse_src")
    (project / "mse.toml").write_text(COSMIAN_MSE_TOML)
    config = ProjectConfig.load(project, now=NOW)  # no confide.toml: mse.toml is read
    assert config.path.name == "mse.toml"
    assert config.cloud.code == project / "mse_src"
    assert config.cloud.hardware == "4g-eu-001"
    assert config.tests_requirements == ("cryptography", "intel-sgx-ra", "pytest==7.2.0")
    # The docker key names the runtime image, whose requirement set is used (ADR 0024).
    assert config.cloud.docker == "ghcr.io/cosmian/mse-flask:20230710125733"
    assert config.warnings == ()


def test_confide_toml_wins_over_mse_toml_unless_asked(project: Path) -> None:
    (project / "confide.toml").write_text(GOOD)
    (project / "mse.toml").write_text(GOOD.replace('"hello"', '"from-mse"'))
    assert ProjectConfig.load(project, now=NOW).name == "hello"
    assert ProjectConfig.load(project / "mse.toml", now=NOW).name == "from-mse"


def test_unused_keys_everywhere_are_warnings(project: Path) -> None:
    text = "extra = 1\n" + GOOD + "dev_mode = true\n" + SSL + "port = 443\n"
    config = _load(project, text)
    assert [w.split(" is not used")[0] for w in config.warnings] == [
        "confide.toml: extra",
        "confide.toml: [cloud] dev_mode",
        "confide.toml: [cloud.ssl] port",
    ]


@pytest.mark.parametrize(
    ("application", "module"),
    [("pkg.web:app", "pkg.web"), ("pkg:app", "pkg"), ("app:application", "app")],
)
def test_modules_as_files_and_packages(project: Path, application: str, module: str) -> None:
    config = _load(project, GOOD.replace('"app:app"', f'"{application}"'))
    assert config.python_module == module


def test_ssl_selects_fully_encrypted_saas_and_sets_the_expiration(project: Path) -> None:
    config = _load(project, GOOD + SSL)
    assert config.ssl is not None
    assert config.ssl.domain_name == "app.example.com"
    assert config.ssl.certificate == project / "cert.pem"
    assert config.ssl.private_key == project / "key.pem"
    # As mse-cli: without an expiration date the app lasts as long as its certificate.
    assert config.cloud.expiration_date == config.ssl.not_valid_after == NOW + timedelta(days=90)


@pytest.mark.parametrize(
    "domain", ["example.com", "APP.Example.com.", "x-1.example.com"], ids=["apex", "case", "dash"]
)
def test_domain_names_covered(project: Path, domain: str) -> None:
    config = _load(project, GOOD + SSL.replace("app.example.com", domain))
    assert config.ssl is not None and config.ssl.domain_name == domain.lower().rstrip(".")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-31T00:00:00Z", datetime(2030, 1, 31, tzinfo=UTC)),
        ('"2030-01-31 00:00:00+00:00"', datetime(2030, 1, 31, tzinfo=UTC)),  # mse-cli's save()
        ('"2030-01-31T02:00:00+02:00"', datetime(2030, 1, 31, tzinfo=UTC)),
        ("2030-01-31T00:00:00", datetime(2030, 1, 31).astimezone()),  # local time, as mse-cli
        ("2030-01-31", datetime(2030, 1, 31).astimezone()),
    ],
)
def test_expiration_dates(project: Path, value: str, expected: datetime) -> None:
    config = _load(project, GOOD + f"expiration_date = {value}\n")
    assert config.cloud.expiration_date == expected
    assert config.cloud.expiration_date is not None
    assert config.cloud.expiration_date.tzinfo is not None


# -- invalid files: each is one UsageError line ------------------------------------------------

Edit = Callable[[str], str]


def _drop(line: str) -> Edit:
    return lambda text: "\n".join(x for x in text.splitlines() if not x.startswith(line)) + "\n"


def _set(old: str, new: str) -> Edit:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)

    return edit


def _add(extra: str) -> Edit:
    return lambda text: text + extra


BAD: list[tuple[str, str, Edit, str]] = [
    ("no-name", GOOD, _drop("name ="), "confide.toml: missing key name; add the app's name"),
    ("no-cloud", "\n".join(GOOD.split("\n[cloud]")[:1]), lambda t: t, "missing key cloud"),
    ("no-code", GOOD, _drop("code ="), "missing key [cloud] code; add the app folder"),
    ("no-tests-cmd", GOOD, _drop("tests_cmd"), "missing key tests_cmd"),
    ("no-hardware", GOOD, _drop("hardware"), "missing key [cloud] hardware"),
    (
        "name-type",
        GOOD,
        _set('name = "hello"', "name = 3"),
        "name: observed an integer 3, expected a string",
    ),
    ("name-empty", GOOD, _set('name = "hello"', 'name = "  "'), "name: is empty"),
    (
        "requirements-type",
        GOOD,
        _set('["pytest>=8,<10", "httpx>=0.27,<1"]', '"pytest"'),
        "tests_requirements: observed a string 'pytest', expected an array of strings",
    ),
    (
        "requirement-type",
        GOOD,
        _set('"httpx>=0.27,<1"', "1"),
        "tests_requirements[1]: observed an integer 1, expected a string",
    ),
    (
        "requirement-option",
        GOOD,
        _set('"httpx>=0.27,<1"', '"--index-url=https://evil"'),
        "expected a requirement, not a pip option",
    ),
    (
        "cloud-type",
        GOOD.split("\n[cloud]")[0] + '\ncloud = "yes"\n',
        lambda t: t,
        "cloud: observed a string, expected a table",
    ),
    ("application-form", GOOD, _set('"app:app"', '"app"'), "observed 'app', expected module:attr"),
    ("application-attr", GOOD, _set('"app:app"', '"app:"'), "expected module:attribute"),
    (
        "application-module",
        GOOD,
        _set('"app:app"', '"nothere:app"'),
        "python_application: module 'nothere' not found: no nothere.py in the code folder",
    ),
    (
        "healthcheck",
        GOOD,
        _set('"/health"', '"health"'),
        "healthcheck_endpoint: observed 'health', expected a URL path starting with /",
    ),
    ("tests-cmd-quote", GOOD, _set('"pytest -q"', '"pytest \'x"'), "No closing quotation"),
    (
        "code-missing",
        GOOD,
        _set('code = "src"', 'code = "gone"'),
        "[cloud] code: the folder 'gone'",
    ),
    (
        "tests-missing",
        GOOD,
        _set('tests = "tests"', 'tests = "nope"'),
        "[cloud] tests: the folder 'nope'",
    ),
    ("code-is-file", GOOD, _set('code = "src"', 'code = "secrets.json"'), "does not exist"),
    ("code-nul", GOOD, _set('code = "src"', 'code = "a\\u0000b"'), "no control characters"),
    ("not-toml", "name = \n", lambda t: t, "not valid TOML: Invalid value (at line 1, column 8)"),
    ("deep-toml", "a = " + "[" * 100_000, lambda t: t, "not valid TOML"),
    (
        "expired-date",
        GOOD,
        _add("expiration_date = 2025-06-01T00:00:00Z\n"),
        "expiration_date: observed 2025-06-01T00:00:00+00:00, which is in the past",
    ),
    (
        "unparsable-date",
        GOOD,
        _add('expiration_date = "next tuesday"\n'),
        "observed 'next tuesday', expected an ISO 8601 date-time",
    ),
    ("date-type", GOOD, _add("expiration_date = 5\n"), "observed an integer 5, expected a date-"),
    ("date-time-only", GOOD, _add("expiration_date = 10:00:00\n"), "observed a time"),
    (
        "secrets-missing",
        GOOD,
        _set('"secrets.json"', '"gone.json"'),
        "[cloud] secrets: the file 'gone.json'",
    ),
    (
        "secrets-is-dir",
        GOOD,
        _set('"secrets.json"', '"src"'),
        "does not exist or is not a regular file",
    ),
    ("secrets-not-json", GOOD, _set('"secrets.json"', '"bad.json"'), "bad.json is not JSON"),
    (
        "secrets-not-object",
        GOOD,
        _set('"secrets.json"', '"list.json"'),
        "holds a JSON list, expected a JSON object",
    ),
    (
        "ssl-type",
        GOOD + 'ssl = "on"\n',
        lambda t: t,
        "[cloud] ssl: observed a string, expected a table",
    ),
    ("ssl-no-domain", GOOD + SSL, _drop("domain_name"), "missing key [cloud.ssl] domain_name"),
    (
        "ssl-bad-domain",
        GOOD + SSL,
        _set("app.example.com", "https://app.example.com"),
        "expected a DNS name",
    ),
    (
        "ssl-expired",
        GOOD + SSL,
        _set('"cert.pem"', '"expired.pem"'),
        "[cloud.ssl] certificate: ",
    ),
    ("ssl-expired-when", GOOD + SSL, _set('"cert.pem"', '"expired.pem"'), "expired on 2025-12-31"),
    (
        "ssl-future",
        GOOD + SSL,
        _set('"cert.pem"', '"future.pem"'),
        "is not valid before 2026-01-02",
    ),
    (
        "ssl-expires-first",
        GOOD.replace('"secrets.json"\n', '"secrets.json"\nexpiration_date = 2027-01-01T00:00:00Z\n')
        + SSL,
        lambda t: t,
        "expires on 2026-04-01T00:00:00+00:00, before [cloud] expiration_date 2027-01-01",
    ),
    (
        "ssl-wrong-key",
        GOOD + SSL,
        _set('"key.pem"', '"other-key.pem"'),
        "key.pem does not match the certificate",
    ),
    ("ssl-encrypted-key", GOOD + SSL, _set('"key.pem"', '"encrypted.pem"'), "is encrypted"),
    ("ssl-garbage-key", GOOD + SSL, _set('"key.pem"', '"secrets.json"'), "holds no PEM private"),
    ("ssl-garbage-cert", GOOD + SSL, _set('"cert.pem"', '"garbage.pem"'), "holds no PEM cert"),
    ("ssl-cert-missing", GOOD + SSL, _set('"cert.pem"', '"gone.pem"'), "the file 'gone.pem'"),
    (
        "ssl-domain-not-covered",
        GOOD + SSL,
        _set("app.example.com", "app.example.org"),
        "app.example.org is not covered by the certificate",
    ),
    (
        "ssl-wildcard-one-label",
        GOOD + SSL,
        _set("app.example.com", "a.b.example.com"),
        "its DNS names are *.example.com, example.com",
    ),
    ("ssl-no-san", GOOD + SSL, _set('"cert.pem"', '"nosan.pem"'), "its DNS names are none"),
    (
        "ssl-chain-too-long",  # the operator refuses it: refused before any upload (issue 15)
        GOOD + SSL,
        _set('"cert.pem"', '"long.pem"'),
        f"holds {MAX_CERTIFICATE_CHAIN + 1} certificates, expected 1 to {MAX_CERTIFICATE_CHAIN}",
    ),
]


@pytest.mark.parametrize(
    ("base", "edit", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_files(project: Path, base: str, edit: Edit, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        _load(project, edit(base))
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert message.startswith(str(project / "confide.toml"))


def test_no_project_file_in_the_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no confide.toml or mse.toml in .*; give the project"):
        ProjectConfig.load(tmp_path, now=NOW)


def test_an_unreadable_project_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read the project file .*missing.toml"):
        ProjectConfig.load(tmp_path / "missing.toml", now=NOW)


def test_a_project_file_that_is_not_utf8(project: Path) -> None:
    (project / "confide.toml").write_bytes(b'name = "\xff"\n')
    with pytest.raises(UsageError, match=r"not UTF-8 text \(byte 8\)"):
        ProjectConfig.load(project, now=NOW)


def test_a_project_file_too_large(project: Path) -> None:
    (project / "confide.toml").write_text("# x\n" * 100_000)
    with pytest.raises(UsageError, match="is larger than"):
        ProjectConfig.load(project, now=NOW)


def test_now_must_be_aware(project: Path) -> None:
    with pytest.raises(UsageError, match="aware"):
        ProjectConfig.from_toml(GOOD, path=project / "confide.toml", now=datetime(2026, 1, 1))


# -- any text: a ProjectConfig or our own error, nothing else ----------------------------------

_KEYS = [
    "name",
    "python_application",
    "healthcheck_endpoint",
    "tests_cmd",
    "tests_requirements",
    "code",
    "tests",
    "project",
    "hardware",
    "secrets",
    "expiration_date",
    "ssl",
    "domain_name",
    "private_key",
    "certificate",
    "docker",
]
_VALUES = [
    '"hello"',
    '"app:app"',
    '"pkg.web:app"',
    '"/health"',
    '"pytest"',
    '["pytest"]',
    "[]",
    '"src"',
    '"tests"',
    '"secrets.json"',
    '"bad.json"',
    '"key.pem"',
    '"cert.pem"',
    '"expired.pem"',
    '"app.example.com"',
    "2030-01-01T00:00:00Z",
    "2030-01-01",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59",
    '"9999-12-31"',
    "1",
    "-1.5e400",
    "true",
    "{}",
    '""',
    '"\\u0000"',
    '"../../../../etc"',
    '"' + "a" * 5000 + '"',
]
_GOOD_TOP = {
    "name": '"hello"',
    "python_application": '"app:app"',
    "healthcheck_endpoint": '"/health"',
    "tests_cmd": '"pytest"',
    "tests_requirements": '["pytest"]',
}
_GOOD_CLOUD = {"code": '"src"', "tests": '"tests"', "project": '"p"', "hardware": '"small"'}
_GOOD_SSL = {
    "domain_name": '"app.example.com"',
    "private_key": '"key.pem"',
    "certificate": '"cert.pem"',
}


def _toml_string(text: str) -> str:
    escaped = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or c in '\x7f"\\' else c for c in text)
    return f'"{escaped}"'


_value = st.one_of(
    st.sampled_from(_VALUES),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20).map(_toml_string),
)
_noise = st.text(max_size=30)


@st.composite
def _toml_ish(draw: st.DrawFn) -> str:
    """A project file near a valid one: keys dropped, added or retyped, and some noise."""

    def table(good: dict[str, str]) -> dict[str, str]:
        out = dict(good)
        for key in draw(st.lists(st.sampled_from(sorted(good)), max_size=2)):
            out.pop(key, None)
        out.update(draw(st.dictionaries(st.sampled_from(_KEYS), _value, max_size=3)))
        return out

    lines = [f"{k} = {v}" for k, v in table(_GOOD_TOP).items()]
    if draw(st.booleans()) or draw(st.booleans()):
        lines += ["[cloud]", *(f"{k} = {v}" for k, v in table(_GOOD_CLOUD).items())]
        if draw(st.booleans()):
            lines += ["[cloud.ssl]", *(f"{k} = {v}" for k, v in table(_GOOD_SSL).items())]
    if draw(st.integers(0, 3)) == 0:
        noise = draw(_noise)
        lines.insert(draw(st.integers(0, len(lines))), noise)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_project(tmp_path_factory.mktemp("fuzz") / "p")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(_toml_ish(), _noise))
def test_any_text_gives_a_config_or_a_usage_error(fuzz_project: Path, text: str) -> None:
    try:
        config = ProjectConfig.from_toml(text, path=fuzz_project / "confide.toml", now=NOW)
    except UsageError as err:
        assert "\n" not in str(err)
    else:
        assert config.cloud.code.is_dir()
