"""The `serve` plugin: ``lccore serve`` puts finished runs behind an HTTP API (FastAPI on uvicorn).

It owns the app (:mod:`lccore_serve.app`), micro-batching and the threads (:mod:`.batching`), the
guards in front of every route (:mod:`.guard`), the error format (:mod:`.errors`) and the process
(:mod:`.server`); the generic endpoints are its own, and every plugin adds its endpoints through
``register_routes`` (the generation plugin: the OpenAI-compatible chat and completions). fastapi,
pydantic and uvicorn are imported only when a server starts, never by ``lccore --help``.
"""

from __future__ import annotations

import os

import lccore


@lccore.hookimpl
def register_commands(commands):
    serve = commands.add("serve", help="serve runs over HTTP: /v1/predict, /v1/embeddings, /v1/models, the plugins' endpoints (/v1/chat/completions, /v1/explain, /v1/kg/query, ...), a page at /")
    serve.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="finished runs; each is served under its directory name")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port, 1 to 65535 (default 8000; 0 is refused)")
    serve.add_argument("--allowed-host", dest="allowed_hosts", action="append", default=[], metavar="NAME",
                       help="also answer requests whose Host header is NAME (repeatable; *.example.org patterns); by default only --host, "
                            "127.0.0.1, localhost and ::1 (and any IP address when --host is 0.0.0.0 or ::); '*': any name, which lets "
                            "web pages reach the server through DNS rebinding (unsafe without --api-key-env)")
    serve.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the API key every endpoint but /healthz and / then needs")
    serve.add_argument("--max-batch-size", type=int, default=32, metavar="N", help="most inputs in one model batch (default 32; 1 to 4096)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS", help="how long a request waits for others to batch with (default 5; 0 to 10000)")
    serve.add_argument("--max-inputs", type=int, default=64, metavar="N", help="most inputs per request (default 64, at most 10000; more: 413)")
    serve.add_argument("--max-input-chars", type=int, default=100_000, metavar="N", help="most characters in one input, prompt or query (default 100000; more: 413)")
    serve.add_argument("--max-body-bytes", type=int, default=1 << 20, metavar="N", help="largest request body (default 1 MiB, at most 1 GiB; larger: 413)")
    serve.add_argument("--timeout", type=float, default=30.0, metavar="S",
                       help="per-request time limit in seconds (default 30, at most 86400; then 504, and the work is stopped)")
    serve.add_argument("--max-queue", type=int, default=256, metavar="N", help="most inputs waiting for one run's model (default 256; more: 503 with Retry-After)")
    serve.add_argument("--max-new-tokens", type=int, default=1024, metavar="N", help="largest max_new_tokens (max_tokens) a generation request may ask for (default 1024; more: 422)")
    serve.add_argument("--max-num-beams", type=int, default=8, metavar="N", help="largest num_beams a generation request may ask for (default 8; more: 422)")
    serve.add_argument("--kg", metavar="STORE", help="a knowledge-graph store directory (lccore kg import/build) for read-only SPARQL at POST /v1/kg/query")
    serve.add_argument("--kg-max-rows", type=int, default=10_000, metavar="N", help="most rows (or triples) of one /v1/kg/query answer (default 10000, at most 10000000; more are cut, with the header Lccore-Truncated: true)")
    serve.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="autocast precision for the forward pass; auto: bf16 when a measurement at start, on the run's own data, finds it faster and in agreement with fp32")
    serve.add_argument("--policy", action="append", default=[], metavar="NAME", help="an ethics policy for inputs and outputs, after each run config's 'ethics' list (repeatable)")
    serve.add_argument("--ethics-config", metavar="FILE", help="YAML file with an 'ethics:' list of policies")
    serve.add_argument("--audit-log", metavar="FILE", help="append the ethics decisions here (JSONL; hashes, never the text)")


    def run(args) -> int:
        from lccore import ethics

        extra = ethics.items_from_cli(args.policy, args.ethics_config)  # checked before the models load
        commands.check_output_path(args.audit_log, "--audit-log")
        api_key = None
        if args.api_key_env:
            api_key = os.environ.get(args.api_key_env, "")
            if not api_key:
                raise lccore.ConfigError(f"--api-key-env {args.api_key_env}: the environment variable is not set or empty")
        if not args.run_dirs and args.kg is None:
            raise lccore.ConfigError("serve: give at least one RUN_DIR, or a knowledge graph with --kg STORE")
        from .app import ServeLimits
        from .server import check_port, serve

        check_port(args.port)
        # Each limit is range-checked as it is made; the error names its flag.
        limits = ServeLimits(max_body_bytes=args.max_body_bytes, max_inputs=args.max_inputs, max_input_chars=args.max_input_chars,
                             timeout_s=args.timeout, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                             max_new_tokens=args.max_new_tokens, max_num_beams=args.max_num_beams, kg_max_rows=args.kg_max_rows)
        serve(args.run_dirs, host=args.host, port=args.port, api_key=api_key, limits=limits, precision=args.precision,
              ethics_items=extra, audit_log=args.audit_log, kg=args.kg, allowed_hosts=args.allowed_hosts, engine=getattr(args, "engine", None))
        return 0

    serve.set_defaults(command=run)
