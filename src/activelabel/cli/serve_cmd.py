"""``activelabel serve``: the labeler as an HTTP service (sidecar, ext_authz, OTLP stage, admission webhook)."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from activelabel.cli._common import err, print_policy_error
from activelabel.cli.main import app
from activelabel.errors import AuditError, PolicyError, PseudonymKeyError


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr as one line and exit with ``code``.

    Unlike the shared ``fail``, never wrapped at the console width: in a pipe or a
    log file (where ``serve`` usually runs) a wrapped line breaks grep and the hint.
    """
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def serve(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy YAML file to serve.")] = Path("policy.yaml"),
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on (default 127.0.0.1, or the config's).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to listen on (default 8080, or the config's).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Service config YAML (limits, ext_authz, OTLP, admission); see docs/service.md.")] = None,
    tokens: Annotated[Path | None, typer.Option("--tokens", help="Token table YAML: token -> {scopes, clearances}. Default: $ACTIVELABEL_TOKENS.")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept unauthenticated calls (local use only).")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Reload the policy when its file changes.")] = False,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS (needed for admission webhooks).")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key for --tls-cert.")] = None,
    record: Annotated[Path | None, typer.Option("--record", help="Record each decision in this SQLite store; enables POST /v1/feedback.")] = None,
    id_field: Annotated[str | None, typer.Option("--id-field", help="Event field holding the record id for --record (default: content hash).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug | info | warning | error.")] = "info",
    history: Annotated[Path | None, typer.Option("--history", help="SQLite file of the policy history (default: the --record store; in memory without one).")] = None,
    audit: Annotated[Path | None, typer.Option("--audit", help="Write every decision and admin action to a tamper-evident audit log in this directory.")] = None,
    audit_key: Annotated[Path | None, typer.Option("--audit-key", help="Ed25519 signing key (PEM) for --audit (default: generated into DIR/keys/).")] = None,
    audit_level: Annotated[str | None, typer.Option("--audit-level", help="None | Metadata | Request | Full for every decision (default Metadata).")] = None,
    audit_policy: Annotated[Path | None, typer.Option("--audit-policy", help="Audit level policy YAML (rules by door, label, sensitivity).")] = None,
) -> None:
    """Serve POST /v1/label, /metrics, ext_authz, OTLP /v1/traces and /v1/logs, and /v1/admission.

    The policy reloads on POST /v1/policy/reload (admin token), on SIGHUP, and with --watch on file change; a policy that fails validation or its own tests is refused and the running one keeps serving.
    """
    from activelabel.service import (
        AuthConfigError,
        ServiceConfigError,
        create_app,
        load_service_config,
        load_token_table,
    )
    from activelabel.service._server import run_server

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not policy.exists():
        fail(f"policy file {policy} does not exist (pass --policy PATH to a policy YAML)")
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together: pass both to serve HTTPS, or neither")
    try:
        settings = load_service_config(config)
        overrides: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        if watch:
            overrides["watch_policy"] = True
        if record is not None:
            overrides["store"] = settings.store.model_copy(update={"path": str(record), "id_field": id_field or settings.store.id_field})
        settings = settings.model_copy(update=overrides)
        token_table = None if no_auth else load_token_table(tokens, env_var=settings.tokens_env)
    except (ServiceConfigError, AuthConfigError) as exc:
        fail(str(exc), code=2)
    if token_table is None and not no_auth:
        fail(
            "no tokens configured, so the service would accept anyone. Pass --tokens FILE "
            + "(YAML: token -> {scopes: [label, feedback, admin], clearances: [secret]}), "
            + f"set ${settings.tokens_env}, "
            "or pass --no-auth for local use.",
            code=2,
        )
    if no_auth:
        err.print(
            "[bold yellow on red] WARNING [/] [bold]authentication is OFF (--no-auth)[/]: anyone who can reach "
            f"{settings.host}:{settings.port} may label and reload the policy. Use only on a trusted local machine.",
            highlight=False,
            soft_wrap=True,
        )
    # Opened inside create_app once the policy is in (it names the sensitive labels); a bad
    # key or level policy stops serve there, before it listens.
    audit_factory = None
    if audit is not None:
        from activelabel.cli._common import audit_options

        audit_factory = audit_options(audit, audit_key, audit_level, audit_policy)

    try:
        service = create_app(
            policy,
            config=settings,
            tokens=token_table,
            no_auth=no_auth,
            handle_sighup=True,
            # Tokens rotate with the policy: SIGHUP / reload re-read them too.
            tokens_source=None if no_auth else lambda: load_token_table(tokens, env_var=settings.tokens_env),
            history_path=history,
            audit=audit_factory,
        )
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(1) from exc
    except (PseudonymKeyError, AuditError) as exc:
        fail(escape(str(exc)), code=2)
    snapshot = service.state.runtime.current
    scheme = "https" if tls_cert else "http"
    logging.getLogger("activelabel.service").info(
        "serving policy %s version %s (%d labels) on %s://%s:%d; auth: %s; OTLP forward: %s; decisions recorded: %s",
        snapshot.name or policy, snapshot.version, len(snapshot.label_names), scheme, settings.host, settings.port,
        "OFF (--no-auth)" if no_auth else f"{len(token_table or ())} token(s)",
        settings.otlp.forward_endpoint or "none (returned to the sender)",
        settings.store.path or "no",
    )
    # The compiled policy and the imported libraries live as long as the process:
    # freezing them keeps full garbage collections (latency spikes) short.
    gc.collect()
    gc.freeze()
    run_server(
        service,
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        header_timeout_s=settings.header_timeout_s,
        max_connections_per_client=settings.max_connections_per_client,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
