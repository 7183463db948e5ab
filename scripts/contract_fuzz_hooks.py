"""schemathesis hooks and helpers for scripts/contract-fuzz.

As hooks (SCHEMATHESIS_HOOKS=contract_fuzz_hooks): a create (of a workspace or a TES task) is
sent half the time as one the
federation can place (the demo project and template, a dataset a site holds, its visa from the
dev issuer), so the fuzzer gets past the grant checks into placement and its stateful runs have
workspaces to follow; workspace and project ids in paths are half the time a real workspace
(BASHO_FUZZ_WORKSPACE, made for the researcher before the runs; a task likewise,
BASHO_FUZZ_TASK, and a federated job, BASHO_FUZZ_JOB) and the demo project (quotas
another one, so a fuzzed quota never refuses the creates), so reads are reached with data.

As a command: `namespace DATA_DIR` prints the Docker namespace `basho dev` gives a data dir's
containers (cli/src/dev/sites.rs); `filters ROLE` prints the schemathesis options that select
the operations a role may call (each role is fuzzed on its own operations, so none answers
only 401 or 403); `phases ROLE` the phases it runs (stateful only where it creates).
"""
import functools
import json
import os
import subprocess
import sys

# The operations each role may call (orchestrator/src/api/auth.rs).
PUBLIC = ["healthz", "openapi", "metrics"]
ROLES = {
    "platform": ["createWorkspace", "listWorkspaces", "getWorkspace", "deleteWorkspace",
                 "listSites", "listTemplates", "revoke", "projectUsage", "getQuota", "setQuota",
                 "listReleaseRequests", "GetServiceInfo", "CreateTask", "ListTasks", "GetTask",
                 "CancelTask", "createFederatedJob", "listFederatedJobs", "getFederatedJob",
                 "cancelFederatedJob", "getScheduling", "setScheduling"],
    "admin": ["createWorkspace", "listWorkspaces", "getWorkspace", "deleteWorkspace",
              "listSites", "listTemplates", "revoke", "projectUsage", "getQuota", "setQuota",
              "listAudit",
              "createToken", "listTokens", "revokeToken", "listReleaseRequests",
              "listFederatedJobs", "getFederatedJob", "cancelFederatedJob", "getScheduling"],
    "auditor": ["listAudit", "projectUsage", "getQuota", "listReleaseRequests", "ListTasks",
                "GetTask", "listFederatedJobs", "getFederatedJob", "getScheduling"],
    "researcher": ["listWorkspaces", "getWorkspace", "openSession", "listReleaseRequests",
                   "ListTasks", "GetTask", "listFederatedJobs", "getFederatedJob",
                   "cancelFederatedJob"],
    "agent": ["agentRegister", "agentCapacity", "agentDesired", "agentObservations", "agentUsage", "agentTunnel"],
}
DEMO_PROJECT = "P-0001"
QUOTA_PROJECT = "P-QUOTA"
RESEARCHER = "alice@example.org"


def namespace(data_dir):
    h = 0xCBF29CE484222325
    for b in os.fsencode(os.path.abspath(data_dir)):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"dev-{h:016x}"


def filters(role):
    args = []
    for op in ROLES[role] + (PUBLIC if role == "platform" else []):
        args += ["--include-operation-id", op]
    return args


@functools.lru_cache(maxsize=None)
def visa(dataset):
    out = subprocess.run(
        [os.environ["BASHO_FUZZ_BIN"], "dev", "visa", "--data-dir", os.environ["BASHO_FUZZ_DATA"],
         "--dataset", dataset, "--subject", RESEARCHER],
        capture_output=True, text=True, timeout=30)
    return out.stdout.strip() if out.returncode == 0 else None


if __name__ == "__main__":
    if sys.argv[1] == "namespace":
        print(namespace(sys.argv[2]))
    elif sys.argv[1] == "filters":
        print(" ".join(filters(sys.argv[2])))
    elif sys.argv[1] == "phases":
        # Stateful runs follow the links from a created workspace: only roles that create.
        stateful = "createWorkspace" in ROLES[sys.argv[2]]
        print("examples,coverage,fuzzing" + (",stateful" if stateful else ""))
    sys.exit(0)

import schemathesis  # noqa: E402  (only the hooks need it)
from hypothesis import strategies as st  # noqa: E402


@functools.lru_cache(maxsize=None)
def demo_datasets():
    """The datasets the dev sites hold, as GET /v1/sites lists them."""
    import urllib.request
    with open(os.path.join(os.environ["BASHO_FUZZ_DATA"], "platform-token")) as f:
        token = f.read().strip()
    req = urllib.request.Request(os.environ["BASHO_FUZZ_URL"] + "/v1/sites",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        sites = json.load(r)
    return sorted(d["id"] for s in sites for d in s["datasets"])


def valid_create(body, dataset):
    """`body` made one the federation can place: the demo project and template, one dataset a
    site holds, its visa from the dev issuer; the fuzzed resources and duration stay."""
    body = dict(body) if isinstance(body, dict) else {}
    body.update({"project": DEMO_PROJECT, "template": "shell", "datasets": [dataset],
                 "visas": [visa(dataset)]})
    body.pop("site", None)
    return body


def valid_task(body, dataset):
    """`body` made a TES task the federation can place: one executor of the demo image, one
    input from a dataset a site holds, the demo project and its visa in the tags; the fuzzed
    name and description stay."""
    body = body if isinstance(body, dict) else {}
    kept = {k: body[k] for k in ("name", "description") if k in body}
    return {**kept, "executors": [{"image": "basho/demo", "command": ["true"]}],
            "inputs": [{"url": f"basho://datasets/{dataset}/x", "path": f"/data/{dataset}/x"}],
            "tags": {"basho_project": DEMO_PROJECT, "basho_visas": visa(dataset)}}


def valid_job(body, dataset):
    """`body` made a federated job the federation can start: the demo project, one dataset a
    site holds and its visa, both steps `true` in the demo image; the fuzzed name, resources,
    durations and min_sites stay."""
    body = body if isinstance(body, dict) else {}
    kept = {k: body[k] for k in ("name", "min_sites") if k in body}
    step = body.get("site_step") if isinstance(body.get("site_step"), dict) else {}
    agg = body.get("aggregation") if isinstance(body.get("aggregation"), dict) else {}
    fuzzed = ("resources", "duration_s")
    return {**kept, "project": DEMO_PROJECT, "visas": [visa(dataset)],
            "site_step": {**{k: step[k] for k in fuzzed if k in step},
                          "image": "basho/demo", "command": ["true"]},
            "aggregation": {**{k: agg[k] for k in fuzzed if k in agg},
                            "image": "basho/demo", "command": ["true"]}}


def with_body(case, body):
    case.body = body
    return case


@schemathesis.hook
def flatmap_case(ctx, case):
    # Only cases meant to be valid: a negative case made valid would be a false "accepted".
    negative = case.meta is None or case.meta.generation.mode.is_negative
    make = {"POST /v1/workspaces": valid_create,
            "POST /ga4gh/tes/v1/tasks": valid_task,
            "POST /v1/federated-jobs": valid_job}.get(ctx.operation.label)
    if make is None or negative:
        return st.just(case)
    valid = st.sampled_from(demo_datasets()).map(lambda d: with_body(case, make(case.body, d)))
    return st.one_of(st.just(case), valid)


@schemathesis.hook
def flatmap_path_parameters(ctx, params):
    if not isinstance(params, dict) or "id" not in params:
        return st.just(params)
    if ctx.operation.path.endswith("/quota"):
        # Its own project: a fuzzed quota of 0 on the demo project would refuse every later
        # create, and the stateful runs would have nothing to follow.
        return st.sampled_from([params, {**params, "id": QUOTA_PROJECT}])
    if "/projects/" in ctx.operation.path:
        return st.sampled_from([params, {**params, "id": DEMO_PROJECT}])
    known = os.environ.get("BASHO_FUZZ_WORKSPACE")
    if known and ctx.operation.path.startswith("/v1/workspaces/"):
        return st.sampled_from([params, {**params, "id": known}])
    # A task's and a job's reads and cancels take the real one three times in four: after the
    # first cancel, one ended answers as it is (a job) or 400 (a task), and a fuzzed id 404, so
    # an even split can leave an operation answering mostly 404.
    job = os.environ.get("BASHO_FUZZ_JOB")
    if job and ctx.operation.path.startswith("/v1/federated-jobs/"):
        return st.sampled_from([params] + [{**params, "id": job}] * 3)
    task = os.environ.get("BASHO_FUZZ_TASK")
    if task and ctx.operation.path.startswith("/ga4gh/tes/v1/tasks/"):
        return st.sampled_from([params] + [{**params, "id": task}] * 3)
    return st.just(params)


@schemathesis.hook
def map_query(ctx, query):
    # A long-poll answers when its wait is over: keep the fuzzer's waits short.
    if ctx.operation.label == "GET /v1/agent/desired" and isinstance(query, dict):
        wait = query.get("wait_s")
        if isinstance(wait, int) and 2 < wait <= 3600:
            query = {**query, "wait_s": 2}
    return query


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    # The run's own token outlives the run: revoking it (its id comes back from GET /v1/tokens,
    # and the stateful runs follow that) would leave every later call 401. Another id, which
    # answers the documented 404, is revoked instead.
    own = os.environ.get("BASHO_FUZZ_OWN_TOKEN")
    params = case.path_parameters or {}
    if own and case.operation.label == "DELETE /v1/tokens/{id}" and params.get("id") == own:
        case.path_parameters = {**params, "id": "tok-00000000"}
