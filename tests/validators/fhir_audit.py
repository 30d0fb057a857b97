"""Validates FHIR AuditEvents, one JSON resource per line, independently of the gateway.

1. Structure: each line must parse as an R4 (4.0.1) AuditEvent with the `fhir.resources`
   models (unknown elements, bad ids, bad dates and wrong types are errors).
2. BALP: each resource that claims an IHE Basic Audit Log Patterns profile in
   `meta.profile` must carry what that profile requires (written here from the profiles'
   definitions, not from the gateway's code: docs/audit.md lists the sources).

Usage: validate.py FILE  ->  prints one line per problem; exit 0 when there is none.
"""

import base64
import json
import sys

from fhir.resources import __fhir_version__
from fhir.resources.auditevent import AuditEvent

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"

# What each profile fixes: the interactions its subtype slice allows, the action, and the
# DICOM role codes of its client and server agents (a read swaps them).
PROFILES = {
    "IHE.BasicAudit.Read": ({"read", "vread"}, "R", "110152", "110153", False),
    "IHE.BasicAudit.PatientRead": ({"read", "vread"}, "R", "110152", "110153", True),
    "IHE.BasicAudit.Query": ({"search", "search-type", "search-system"}, "E", "110153", "110152", False),
    "IHE.BasicAudit.PatientQuery": ({"search", "search-type", "search-system"}, "E", "110153", "110152", True),
}


def codings(concept):
    """The (system, code) pairs of a CodeableConcept or Coding (dict), or of None."""
    if not concept:
        return set()
    if "coding" in concept:
        return {(c.get("system"), c.get("code")) for c in concept["coding"]}
    return {(concept.get("system"), concept.get("code"))}


def agents_of_type(resource, system, code):
    return [a for a in resource.get("agent", []) if (system, code) in codings(a.get("type"))]


def entities(resource, type_code, role_code):
    return [
        e
        for e in resource.get("entity", [])
        if (ENTITY_TYPE, type_code) in codings(e.get("type"))
        and (OBJECT_ROLE, role_code) in codings(e.get("role"))
    ]


def check_profile(resource, name):
    problems = []
    if name not in PROFILES:
        return [f"claims {name}, which this validator does not know"]
    interactions, action, client, server, patient = PROFILES[name]

    def need(condition, what):
        if not condition:
            problems.append(f"{name}: {what}")

    need(codings(resource.get("type")) == {(AUDIT_EVENT_TYPE, "rest")}, "type must be audit-event-type#rest")
    subtypes = [c for c in resource.get("subtype", []) if c.get("system") == RESTFUL]
    need(len(subtypes) == 1 and subtypes[0].get("code") in interactions,
         f"exactly one restful-interaction subtype among {sorted(interactions)}")
    need(resource.get("action") == action, f"action must be {action}")
    need(resource.get("outcome") == "0", "outcome must be 0 (the profiles are for successes)")
    need(bool(resource.get("recorded")), "recorded is required")
    for role, code in (("client", client), ("server", server)):
        found = agents_of_type(resource, DCM, code)
        need(len(found) == 1, f"one {role} agent typed DCM#{code}")
        for agent in found:
            need(bool(agent.get("who")), f"{role} agent needs who")
            need(bool(agent.get("network")), f"{role} agent needs network")
            need("media" not in agent, f"{role} agent has no media")
    users = agents_of_type(resource, PARTICIPATION, "IRCP")
    need(len(users) <= 1, "at most one user (IRCP) agent")
    for user in users:
        need(user.get("requestor") is True, "the user agent is the requestor")
        need(bool(user.get("who")), "the user agent needs who")
        need("network" not in user, "the user agent has no network")
    if interactions == {"read", "vread"}:
        data = entities(resource, "2", "4") + entities(resource, "2", "3") + entities(resource, "2", "20")
        need(len(data) == 1, "one data entity (System Object, role 4, 3 or 20)")
        need(all(e.get("what") for e in data), "the data entity needs what")
    else:
        queries = entities(resource, "2", "24")
        need(len(queries) == 1, "one query entity (System Object, role Query)")
        for q in queries:
            need("what" not in q, "the query entity has no what")
            need("detail" not in q and "lifecycle" not in q, "the query entity has no detail nor lifecycle")
            try:
                base64.b64decode(q.get("query", ""), validate=True)
                ok = bool(q.get("query"))
            except ValueError:
                ok = False
            need(ok, "the query entity carries the query, base64")
    patients = entities(resource, "1", "1")
    if patient:
        need(len(patients) == 1, "exactly one patient entity")
        for p in patients:
            what = p.get("what") or {}
            need(what.get("type") == "Patient" or str(what.get("reference", "")).startswith("Patient/"),
                 "the patient entity's what is a Reference(Patient)")
    return problems


def main(path):
    problems = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            resource = json.loads(line)
            try:
                AuditEvent.parse_obj(resource)
            except Exception as e:  # noqa: BLE001 - every model error is a finding
                detail = " ".join(str(e).split())
                problems.append(f"line {number}: not an R4 AuditEvent: {detail}")
            for profile in resource.get("meta", {}).get("profile", []):
                if not profile.startswith(BALP):
                    problems.append(f"line {number}: unknown profile {profile}")
                    continue
                for problem in check_profile(resource, profile[len(BALP):]):
                    problems.append(f"line {number}: {problem}")
    for problem in problems:
        print(problem)
    print(f"checked with fhir.resources models of FHIR {__fhir_version__}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
