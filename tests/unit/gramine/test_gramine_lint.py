"""The Gramine manifest and its linter: a generated manifest passes; each seeded mistake is
caught with its own code."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from confide.errors import ManifestError
from confide.gramine import (
    enclave_argv,
    gramine_manifest,
    lint_manifest,
    runtime_environment,
    runtime_imports,
    system_library_dirs,
)
from support.gramine_env import LAUNCH, FakeEnvironment, make_fake_environment


@pytest.fixture
def fake(tmp_path: Path) -> FakeEnvironment:
    return make_fake_environment(tmp_path / "env")


def _manifest(fake: FakeEnvironment) -> str:
    env = fake.scan()
    return gramine_manifest(
        LAUNCH, enclave_argv(LAUNCH, env), env, enclave_size="2G", max_threads=32,
        package=Path("package"), state_dir=Path("state"),
    )  # fmt: skip


def test_a_generated_manifest_passes_and_says_what_the_issue_asks(fake: FakeEnvironment) -> None:
    text = _manifest(fake)
    lint_manifest(text, imported=[f.path for f in fake.scan().files])
    m = tomllib.loads(text)
    assert m["sgx"]["debug"] is False and m["sgx"]["remote_attestation"] == "dcap"
    assert m["sgx"]["enclave_size"] == "2G" and m["sgx"]["max_threads"] == 32
    assert m["libos"]["entrypoint"] == str(fake.roots.interpreter)
    assert m["loader"]["argv"][-4:] == ["--state-dir", "/confide/state", "--tee", "gramine"]
    assert m["loader"]["env"]["CONFIDE_LAUNCH_MANIFEST"] == LAUNCH.to_json().decode()
    # Only where the runtime listens comes from the host, and it is not in the argv.
    passed = {k for k, v in m["loader"]["env"].items() if not isinstance(v, str)}
    assert passed == {"CONFIDE_LISTEN_HOST", "CONFIDE_LISTEN_PORT"}
    assert m["loader"]["env"]["CONFIDE_LISTEN_PORT"] == {"passthrough": True}
    assert "--port" not in m["loader"]["argv"] and "--host" not in m["loader"]["argv"]
    hashes = {e["uri"]: e["sha256"] for e in m["sgx"]["trusted_files"] if isinstance(e, dict)}
    h11 = fake.root / "site" / "h11" / "_readers.py"
    assert hashes[f"file:{h11}"] == __import__("hashlib").sha256(h11.read_bytes()).hexdigest()
    records = sorted(f"file:{p}" for p in (fake.root / "site").glob("*.dist-info/RECORD"))
    assert m["sgx"]["allowed_files"][0] == "file:package"
    # Flask is installed but not needed: its RECORD is not read.
    assert sorted(m["sgx"]["allowed_files"][1:]) == [r for r in records if "flask" not in r]
    mounts = {mount["path"]: mount for mount in m["fs"]["mounts"]}
    assert mounts["/confide/state"] == {
        "type": "encrypted", "path": "/confide/state", "uri": "file:state",
        "key_name": "_sgx_mrenclave",
    }  # fmt: skip
    assert mounts["/dev/shm"]["type"] == "tmpfs"
    # The system's libraries (libssl, libffi, ...) are trusted folders, mounted once.
    libraries = system_library_dirs()
    assert libraries and all(f"file:{d}/" in m["sgx"]["trusted_files"] for d in libraries)
    identity = sorted(p for p, mount in mounts.items() if mount.get("uri") == f"file:{p}")
    assert not any(b.startswith(a + "/") for a in identity for b in identity)
    assert not any("insecure__" in key for key in re.findall(r"^[\w.]+", text, re.M))


def _sub(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, f"the seed does not apply: {old!r}"
        return text.replace(old, new, 1)

    return edit


def _append(line: str) -> Callable[[str], str]:
    return lambda text: text + line + "\n"


ELF = "elf-data"

# Each row: a seeded mistake and the code that must catch it.
MISTAKES: dict[str, tuple[Callable[[str], str], str]] = {
    "cmdline argv": (_append("loader.insecure__use_cmdline_argv = true"), "gramine.insecure"),
    "host environment": (_append("loader.insecure__use_host_env = true"), "gramine.insecure"),
    "debug enclave": (_sub("sgx.debug = false", "sgx.debug = true"), "gramine.debug"),
    "debug missing": (_sub("sgx.debug = false\n", ""), "gramine.debug"),
    "no dcap": (_sub('sgx.remote_attestation = "dcap"\n', ""), "gramine.attestation"),
    "epid": (_sub('remote_attestation = "dcap"', 'remote_attestation = "epid"'),
             "gramine.attestation"),
    "allowed python file": (_sub('  "file:package",', '  "file:package",\n  "file:/x/app.py",'),
                            "gramine.allowed_code"),
    "allowed folder": (_sub('  "file:package",', '  "file:package",\n  "file:/srv/app/",'),
                       "gramine.allowed_code"),
    "allowed shared object": (_sub('  "file:package",', '  "file:package",\n  "file:/l/x.so.1",'),
                              "gramine.allowed_code"),
    "allowed executable": (_sub('"file:package",', f'"file:package",\n  "file:{ELF}",'),
                           "gramine.allowed_code"),
    "lax file policy": (_sub('file_check_policy = "strict"',
                             'file_check_policy = "allow_all_but_log"'), "gramine.file_policy"),
    "env passthrough": (_append("loader.env.EVIL = { passthrough = true }"), "gramine.env"),
    "preload passthrough": (_append("loader.env.LD_PRELOAD = { passthrough = true }"),
                            "gramine.env"),
    "listen variable, other form": (_sub("CONFIDE_LISTEN_PORT = { passthrough = true }",
                                         'CONFIDE_LISTEN_PORT = { passthrough = "yes" }'),
                                    "gramine.env"),
    "argv missing": (lambda t: re.sub(r"^loader\.argv = .*\n", "", t, flags=re.M),
                     "gramine.argv"),
    "mrsigner sealing": (_sub('key_name = "_sgx_mrenclave"', 'key_name = "_sgx_mrsigner"'),
                         "gramine.sealing_key"),
    "not toml": (_append("sgx.debug = = false"), "gramine.syntax"),
}  # fmt: skip


@pytest.mark.parametrize(("seed", "code"), MISTAKES.values(), ids=MISTAKES.keys())
def test_each_seeded_mistake_is_caught_with_its_code(
    fake: FakeEnvironment, seed: Callable[[str], str], code: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / ELF).write_bytes(b"\x7fELF\x02\x01\x01")  # named like data, holds code
    (tmp_path / "package").write_bytes(b"CONFIDE-PKG")
    text = _manifest(fake)
    lint_manifest(text)  # the unseeded manifest passes: the row is not vacuous
    with pytest.raises(ManifestError) as caught:
        lint_manifest(seed(text))
    assert caught.value.code == code
    assert "\n" not in str(caught.value)


def test_an_imported_file_that_is_not_trusted_is_caught(fake: FakeEnvironment) -> None:
    text = _manifest(fake)
    h11 = fake.root / "site" / "h11" / "_readers.py"
    lint_manifest(text, imported=[h11])
    seeded = "\n".join(line for line in text.splitlines() if "/h11/_readers.py" not in line)
    with pytest.raises(ManifestError) as caught:
        lint_manifest(seeded, imported=[h11])
    assert caught.value.code == "gramine.untrusted_import" and str(h11) in str(caught.value)


def test_the_runtimes_real_imports_are_all_trusted(tmp_path: Path) -> None:
    """Run the runtime's imports in a child interpreter; drop h11 from the trusted files."""
    env = runtime_environment(cache_dir=tmp_path)
    text = gramine_manifest(
        LAUNCH, enclave_argv(LAUNCH, env), env, enclave_size="2G", max_threads=32,
        package=Path("package"), state_dir=Path("state"),
    )  # fmt: skip
    imported = runtime_imports(env)
    assert any(p.parts[-2:] == ("h11", "_readers.py") for p in imported)
    assert any(p.name == "json" or p.parent.name == "json" for p in imported)
    lint_manifest(text, imported=imported)
    seeded = "\n".join(line for line in text.splitlines() if "/h11/" not in line)
    with pytest.raises(ManifestError) as caught:
        lint_manifest(seeded, imported=imported)
    assert caught.value.code == "gramine.untrusted_import"


def test_a_certificate_mode_app_trusts_the_owners_chain(fake: FakeEnvironment) -> None:
    import dataclasses

    from confide.gramine import app_manifest
    from confide.wire import TlsMode

    owner = dataclasses.replace(
        LAUNCH, tls=TlsMode.OWNER, ratls_expiry=None, certificate_sha256=bytes(32)
    )
    text = app_manifest(owner, fake.scan())
    lint_manifest(text)
    m = tomllib.loads(text)
    assert "file:certificate.pem" in m["sgx"]["trusted_files"]
    assert "file:certificate.pem" not in m["sgx"]["allowed_files"]
    argv = m["loader"]["argv"]
    assert argv[argv.index("--certificate") + 1] == "/confide/certificate.pem"
    assert "--ratls" not in argv and m["sgx"]["max_threads"] == 64
