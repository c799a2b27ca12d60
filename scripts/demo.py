"""`make demo`: deploy an app to an operator, verify it, use it; all with the `confide` command.

In a temporary folder, with a simulated TEE (no SGX hardware needed):

1. an operator starts (`confide operator serve`, ports picked by the kernel);
2. its administrator issues a token, and the app owner logs in with it;
3. the owner deploys examples/helloworld in zero-trust mode: the code is
   encrypted with a fresh key, the enclave is attested against the fingerprint
   recomputed on the owner's machine, and only then receives the key;
4. an app user verifies the app, with no account, and calls it over a
   connection pinned to the verified RA-TLS certificate;
5. the owner looks at its status and logs;
6. the same app deployed with --untrusted-ssl: the operator terminates TLS,
   and `confide verify` says users cannot verify it;
7. a simulated quote is rejected without --allow-simulation.

`make demo TEE=simulation-tdx` (`scripts/demo.py --tee simulation-tdx`) runs the same
steps with each app in a simulated TDX trust domain instead of a simulated SGX enclave.

Each step prints the command it runs and checks its exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509

from confide.client import pinned_client
from confide.wire import HostPort

ROOT = Path(__file__).resolve().parent.parent
# Starting an operator and waiting until it listens: the tests' helper.
sys.path.insert(0, str(ROOT / "tests"))
from support.operators import BASE_DOMAIN, OperatorProcess  # noqa: E402

CONFIDE = [str(Path(sys.executable).parent / "confide")]


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def run(
    args: list[str], *, expect: int, env: dict[str, str], show: bool = True
) -> subprocess.CompletedProcess[str]:
    shown = " ".join(shlex.quote(a) for a in ["confide", *args])
    print(f"$ {shown}", flush=True)
    proc = subprocess.run(  # noqa: S603
        [*CONFIDE, *args], capture_output=True, text=True, check=False, env=env, timeout=120
    )
    if show:
        sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    if proc.returncode != expect:
        print(f"demo failed: exit code {proc.returncode}, expected {expect}", file=sys.stderr)
        raise SystemExit(1)
    print(f"(exit {proc.returncode}, as expected)", flush=True)
    return proc


def start_operator(data: Path, env: dict[str, str], tee: str) -> OperatorProcess:
    """``confide operator serve`` on loopback, ports picked by the kernel, once it listens."""
    options = ["--stop-apps-on-exit"]
    if tee != "simulation":
        config = data.parent / "operator.toml"
        config.write_text(f'tee = "{tee}"\n')
        options += ["--config", str(config)]
    shown = ["confide", "operator", "serve", "--data-dir", str(data), "--api", "127.0.0.1:0"]
    shown += ["--router", "127.0.0.1:0", "--base-domain", BASE_DOMAIN, *options]
    print("$ " + " ".join(shlex.quote(a) for a in shown) + " &", flush=True)
    try:
        return OperatorProcess(data, *options, env=env)
    except AssertionError as exc:
        raise SystemExit(f"demo failed: the operator did not start: {exc}") from None


def write_project(work: Path) -> Path:
    (work / "tests").mkdir()
    project = work / "confide.toml"
    code = json.dumps(str(ROOT / "examples" / "helloworld"))
    project.write_text(
        'name = "helloworld"\n'
        'python_application = "app:app"\n'
        'healthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\n'
        "tests_requirements = []\n\n"
        "[cloud]\n"
        f"code = {code}\n"
        'tests = "tests"\n'
        'project = "default"\n'
        'hardware = "small"\n'
    )
    return project


def newest_context(work: Path, known: set[Path]) -> dict[str, object]:
    fresh = [p for p in (work / ".confide").glob("*.json") if p not in known]
    if len(fresh) != 1:
        raise SystemExit(f"demo failed: expected one new app context, found {fresh}")
    known.add(fresh[0])
    context: dict[str, object] = json.loads(fresh[0].read_text())
    return context


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Deploy, verify and use an app on a simulated TEE."
    )
    parser.add_argument("--tee", choices=("simulation", "simulation-tdx"), default="simulation")
    tee = parser.parse_args().tee
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="confide-demo-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(work / "config"),
            "XDG_CACHE_HOME": str(work / "cache"),
        }
        env.pop("CONFIDE_URL", None)
        env.pop("CONFIDE_TOKEN", None)
        data = work / "operator"

        step(f"1. An operator starts, on a simulated TEE ({tee})")
        operator = start_operator(data, env, tee)
        try:
            api = operator.api_url
            router = str(operator.addresses["router"])
            print(f"operator API {api}, router {router}")

            step("2. The operator issues a token; the app owner logs in")
            made = run(
                [
                    "operator",
                    "token",
                    "create",
                    "--account",
                    "alice",
                    "--data-dir",
                    str(data),
                    "--json",
                ],
                expect=0,
                env=env,
                show=False,
            )
            token = json.loads(made.stdout)["token"]
            run(["login", "--url", api, "--token", token], expect=0, env=env)

            step("3. The owner deploys examples/helloworld, zero trust (RA-TLS)")
            project = write_project(work)
            known: set[Path] = set()
            deploy = ["deploy", "--path", str(project), "--connect", router]
            run([*deploy, "--allow-simulation"], expect=0, env=env)
            context = newest_context(work, known)
            app_id = str(context["app_id"])
            domain = f"{app_id}.{BASE_DOMAIN}"

            step("4. An app user verifies it (no account), then calls it over the verified channel")
            pem = work / "ratls.pem"
            verify = ["verify", domain, "--connect", router, "--operator", api]
            run([*verify, "--allow-simulation", "--output", str(pem)], expect=0, env=env)
            run(
                [*verify, "--allow-simulation", "--fingerprint", str(context["fingerprint"])],
                expect=0,
                env=env,
            )
            print(f"$ GET https://{domain}/ (pinned to {pem.name}, through {router})")
            cert = x509.load_pem_x509_certificate(pem.read_bytes())
            with pinned_client(HostPort.parse(router), domain, cert, timeout=15) as user:
                answer = user.get("/")
            print(f"{answer.status_code} {answer.text}")
            if answer.status_code != 200:
                raise SystemExit("demo failed: the app did not answer")

            step("5. The owner looks at the app")
            run(["status", app_id], expect=0, env=env)
            run(["logs", app_id, "--tail", "5"], expect=0, env=env)

            step(
                "6. Deployed with --untrusted-ssl: the operator terminates TLS, and can read it all"
            )
            run([*deploy, "--allow-simulation", "--untrusted-ssl", "-y"], expect=0, env=env)
            other = newest_context(work, known)
            run(
                [
                    "verify",
                    f"{other['app_id']}.{BASE_DOMAIN}",
                    "--connect",
                    router,
                    "--operator",
                    api,
                    "--allow-simulation",
                ],
                expect=1,
                env=env,
            )

            step("7. Without --allow-simulation, the simulated enclave is refused")
            run(verify, expect=1, env=env)
            run(["stop", app_id, "-y"], expect=0, env=env)
        finally:
            step("Stopping the operator (it stops its apps)")
            try:
                operator.terminate()
            except subprocess.TimeoutExpired:
                operator.kill()
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
