"""Pure mapping of Vigil records to HL7 FHIR R4 resources and idempotent transaction Bundles.

No I/O and no clock: the sync worker and the FHIR exporter both call these functions.

Conventions (see docs/INTERFACES.md "Sync"):

* Every resource carries a business ``identifier`` derived from Vigil's own ids (session, mat,
  metric, time), so a replayed Bundle maps to the same identifiers.
* Every Bundle entry is a conditional create: ``request.ifNoneExist = identifier=<system>|<value>``;
  FHIR R4 §3.1.0.8 (transaction processing) resolves references to the entry's ``fullUrl`` to the
  existing resource when the condition matches, so a replay creates nothing twice.
* ``fullUrl`` is ``urn:uuid:<uuid5(system|value)>`` and never equals an identifier value (Medplum
  rewrites urn:uuid references everywhere in a Bundle; equal values would break the condition).
* Vital signs follow the R4 vital-signs profiles (http://hl7.org/fhir/R4/observation-vitalsigns.html):
  HR LOINC 8867-4 ``/min``; SpO2 2708-6 + 59408-5 ``%``; BP panel 85354-9 with components 8480-6 and
  8462-4 ``mm[Hg]``. QTc (8636-3) and HRV SDNN (80404-7) are ECG measurements in ``ms`` with category
  ``procedure`` (they are not in the vital-signs value set). ECG strips are ``valueSampledData`` with
  the ISO/IEEE 11073-10101 lead code (lead II = 131330; FHIR R4 ``ekg`` example).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ID_BASE = "https://vigil.local/fhir/id"
PATIENT_SYSTEM = f"{ID_BASE}/guest"
ENCOUNTER_SYSTEM = f"{ID_BASE}/encounter"
OBSERVATION_SYSTEM = f"{ID_BASE}/observation"
REPORT_SYSTEM = f"{ID_BASE}/report"
_NS = uuid.UUID("6f1c1d4e-3a8b-5c2d-9e0f-7a6b5c4d3e2f")

PROFILE = "http://hl7.org/fhir/StructureDefinition/"
MDC_LEADS: dict[str, tuple[int, str]] = {
    "I": (131329, "MDC_ECG_ELEC_POTL_I"),
    "II": (131330, "MDC_ECG_ELEC_POTL_II"),
    "III": (131389, "MDC_ECG_ELEC_POTL_III"),
    "generic": (131328, "MDC_ECG_ELEC_POTL"),
}

# metric -> (LOINC code, display, UCUM unit, profile or None, category)
VITALS: dict[str, tuple[str, str, str, str | None, str]] = {
    "hr": ("8867-4", "Heart rate", "/min", "heartrate", "vital-signs"),
    "spo2": ("2708-6", "Oxygen saturation in Arterial blood", "%", "oxygensat", "vital-signs"),
    "qtc": ("8636-3", "QT interval corrected", "ms", None, "procedure"),
    "sdnn": ("80404-7", "R-R interval.standard deviation (Heart rate variability)", "ms", None, "procedure"),
}
UNIT_DISPLAY = {"/min": "beats/minute", "%": "%", "ms": "ms", "mm[Hg]": "mmHg"}


def iso(wall: float) -> str:
    """Unix seconds → FHIR instant/dateTime in UTC with milliseconds."""
    t = dt.datetime.fromtimestamp(wall, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def full_url(system: str, value: str) -> str:
    """Deterministic ``urn:uuid`` for an identifier; never equal to the identifier value."""
    return f"urn:uuid:{uuid.uuid5(_NS, f'{system}|{value}')}"


def _identifier(system: str, value: str) -> dict[str, Any]:
    return {"system": system, "value": value}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": round(float(value), 3), "unit": UNIT_DISPLAY.get(unit, unit), "system": UCUM, "code": unit}


def _category(code: str) -> list[dict[str, Any]]:
    display = {"vital-signs": "Vital Signs", "procedure": "Procedure"}[code]
    return [{"coding": [{"system": OBS_CATEGORY, "code": code, "display": display}], "text": display}]


def patient_resource(guest: dict[str, Any]) -> dict[str, Any]:
    """Patient from a roster guest ``{"id", "display_name"?, "birth_date"?}``; identified by the roster id."""
    res: dict[str, Any] = {"resourceType": "Patient", "identifier": [_identifier(PATIENT_SYSTEM, str(guest["id"]))],
                           "active": True}
    name = guest.get("display_name")
    if name:
        res["name"] = [{"text": str(name)}]
    if guest.get("birth_date"):
        res["birthDate"] = str(guest["birth_date"])
    return res


def encounter_key(session_id: str, guest_id: str) -> str:
    """Identifier value of the Encounter of one guest in one session."""
    return f"{session_id}.{guest_id}"


def encounter_resource(session_id: str, guest_id: str, start_wall: float, end_wall: float | None,
                       patient_ref: str) -> dict[str, Any]:
    """Encounter for one guest's session (class: ambulatory, status in-progress or finished)."""
    period: dict[str, str] = {"start": iso(start_wall)}
    if end_wall is not None:
        period["end"] = iso(end_wall)
    return {"resourceType": "Encounter",
            "identifier": [_identifier(ENCOUNTER_SYSTEM, encounter_key(session_id, guest_id))],
            "status": "finished" if end_wall is not None else "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                      "display": "ambulatory"},
            "subject": {"reference": patient_ref}, "period": period}


def _observation_base(ident: str, code: dict[str, Any], category: str, patient_ref: str,
                      encounter_ref: str | None, profile: str | None) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Observation",
                           "identifier": [_identifier(OBSERVATION_SYSTEM, ident)],
                           "status": "final", "category": _category(category), "code": code,
                           "subject": {"reference": patient_ref}}
    if profile:
        res["meta"] = {"profile": [PROFILE + profile]}
    if encounter_ref:
        res["encounter"] = {"reference": encounter_ref}
    return res


def vital_observations(session_id: str, guest_id: str, wall: float, metrics: dict[str, float | None],
                       patient_ref: str, encounter_ref: str | None) -> list[dict[str, Any]]:
    """Observations for one vitals sample: hr, spo2, qtc, sdnn and the sbp/dbp panel (None/NaN skipped)."""
    out: list[dict[str, Any]] = []
    stamp = int(round(wall * 1000))

    def present(key: str) -> bool:
        v = metrics.get(key)
        return v is not None and v == v  # NaN check

    for key, (code, display, unit, profile, category) in VITALS.items():
        if not present(key):
            continue
        codings = [{"system": LOINC, "code": code, "display": display}]
        if key == "spo2":
            codings.append({"system": LOINC, "code": "59408-5",
                            "display": "Oxygen saturation in Arterial blood by Pulse oximetry"})
        obs = _observation_base(f"{session_id}.{guest_id}.{key}.{stamp}", {"coding": codings, "text": display},
                                category, patient_ref, encounter_ref, profile)
        obs["effectiveDateTime"] = iso(wall)
        obs["valueQuantity"] = _quantity(float(metrics[key]), unit)  # type: ignore[arg-type]
        out.append(obs)
    if present("sbp") and present("dbp"):
        obs = _observation_base(f"{session_id}.{guest_id}.bp.{stamp}",
                                {"coding": [{"system": LOINC, "code": "85354-9",
                                             "display": "Blood pressure panel with all children optional"}],
                                 "text": "Blood pressure"}, "vital-signs", patient_ref, encounter_ref, "bp")
        obs["effectiveDateTime"] = iso(wall)
        obs["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": _quantity(float(metrics["sbp"]), "mm[Hg]")},  # type: ignore[arg-type]
            {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": _quantity(float(metrics["dbp"]), "mm[Hg]")},  # type: ignore[arg-type]
        ]
        out.append(obs)
    return out


def _median(values: Sequence[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


def vital_window_observations(session_id: str, guest_id: str, start_wall: float, period_s: float,
                              series: dict[str, Sequence[float | None]], patient_ref: str,
                              encounter_ref: str | None) -> list[dict[str, Any]]:
    """Observations summarising a window of periodic vitals samples: one per metric (BP: one panel).

    Each carries the median of the samples present (None/NaN = no value) as ``valueQuantity``, the
    window as ``effectivePeriod`` [start, start + n·period) and ``method.text`` saying how many
    samples it summarises; a metric with no sample in the window gives no Observation. The median
    is robust to the odd artefact a 5-s sample can carry (a single spike does not move it).
    """
    if period_s <= 0:
        raise ValueError("a vitals window needs period_s > 0")
    n = max((len(v) for v in series.values()), default=0)
    if n == 0:
        return []
    stamp = int(round(start_wall * 1000))
    period = {"start": iso(start_wall), "end": iso(start_wall + n * period_s)}

    def values(key: str) -> list[float]:
        return [float(x) for x in series.get(key) or [] if x is not None and x == x]

    def method(k: int) -> dict[str, Any]:
        if k == 1:
            return {"text": f"single sample (samples taken every {period_s:g} s)"}
        return {"text": f"median of {k} samples taken every {period_s:g} s"}

    out: list[dict[str, Any]] = []
    for key, (code, display, unit, profile, category) in VITALS.items():
        vals = values(key)
        if not vals:
            continue
        codings = [{"system": LOINC, "code": code, "display": display}]
        if key == "spo2":
            codings.append({"system": LOINC, "code": "59408-5",
                            "display": "Oxygen saturation in Arterial blood by Pulse oximetry"})
        obs = _observation_base(f"{session_id}.{guest_id}.{key}.w{stamp}", {"coding": codings, "text": display},
                                category, patient_ref, encounter_ref, profile)
        obs["effectivePeriod"] = dict(period)
        obs["valueQuantity"] = _quantity(_median(vals), unit)
        obs["method"] = method(len(vals))
        out.append(obs)
    sbp, dbp = series.get("sbp") or [], series.get("dbp") or []
    pairs = [(float(a), float(b)) for a, b in zip(sbp, dbp, strict=False)
             if a is not None and b is not None and a == a and b == b]
    if pairs:
        obs = _observation_base(f"{session_id}.{guest_id}.bp.w{stamp}",
                                {"coding": [{"system": LOINC, "code": "85354-9",
                                             "display": "Blood pressure panel with all children optional"}],
                                 "text": "Blood pressure"}, "vital-signs", patient_ref, encounter_ref, "bp")
        obs["effectivePeriod"] = dict(period)
        obs["method"] = method(len(pairs))
        obs["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": _quantity(_median([a for a, _ in pairs]), "mm[Hg]")},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": _quantity(_median([b for _, b in pairs]), "mm[Hg]")},
        ]
        out.append(obs)
    return out


def ecg_strip_observation(session_id: str, guest_id: str, start_wall: float, fs: float,
                          samples_uV: Sequence[int], patient_ref: str, encounter_ref: str | None,
                          lead: str = "II", reason: str = "") -> dict[str, Any]:
    """One ECG strip (~10 s) as ``valueSampledData`` in µV: physical = origin + factor × data."""
    if fs <= 0 or not samples_uV:
        raise ValueError("an ECG strip needs fs > 0 and at least one sample")
    mdc, name = MDC_LEADS.get(lead, MDC_LEADS["generic"])
    stamp = int(round(start_wall * 1000))
    obs = _observation_base(f"{session_id}.{guest_id}.ecg-{lead}.{stamp}",
                            {"coding": [{"system": MDC, "code": str(mdc), "display": name}],
                             "text": f"ECG lead {lead}"}, "procedure", patient_ref, encounter_ref, None)
    end_wall = start_wall + len(samples_uV) / fs
    obs["effectivePeriod"] = {"start": iso(start_wall), "end": iso(end_wall)}
    obs["valueSampledData"] = {
        "origin": {"value": 0, "unit": "uV", "system": UCUM, "code": "uV"},
        "period": round(1000.0 / fs, 6), "factor": 1, "dimensions": 1,
        "data": " ".join(str(int(v)) for v in samples_uV)}
    if reason:
        obs["note"] = [{"text": reason}]
    return obs


def session_report(session_id: str, guest_id: str, start_wall: float, end_wall: float, conclusion: str,
                   patient_ref: str, encounter_ref: str | None) -> dict[str, Any]:
    """Session-summary DiagnosticReport (LOINC 11524-6 EKG study) with a plain-text conclusion."""
    res: dict[str, Any] = {"resourceType": "DiagnosticReport",
                           "identifier": [_identifier(REPORT_SYSTEM, f"{session_id}.{guest_id}.summary")],
                           "status": "final",
                           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                                     "code": "PHY", "display": "Physician"}]}],
                           "code": {"coding": [{"system": LOINC, "code": "11524-6", "display": "EKG study"}],
                                    "text": "Vigil monitoring session summary"},
                           "subject": {"reference": patient_ref},
                           "effectivePeriod": {"start": iso(start_wall), "end": iso(end_wall)},
                           "issued": iso(end_wall), "conclusion": conclusion}
    if encounter_ref:
        res["encounter"] = {"reference": encounter_ref}
    return res


def identifier_of(resource: dict[str, Any]) -> tuple[str, str]:
    """(system, value) of a resource's first identifier."""
    ident = resource["identifier"][0]
    return ident["system"], ident["value"]


def transaction_bundle(resources: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A ``transaction`` Bundle of conditional creates; repeated identifiers are sent once."""
    entries: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for res in resources:
        system, value = identifier_of(res)
        if (system, value) in seen:
            continue
        seen.add((system, value))
        entries.append({"fullUrl": full_url(system, value), "resource": res,
                        "request": {"method": "POST", "url": res["resourceType"],
                                    "ifNoneExist": f"identifier={system}|{value}"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def resources_for_payload(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Resources (Patient, Encounter first) for one ``fhir`` outbox payload; see INTERFACES.md."""
    kind = payload.get("kind")
    sid = str(payload["session_id"])
    guest = payload["guest"]
    gid = str(guest["id"])
    patient = patient_resource(guest)
    p_ref = full_url(*identifier_of(patient))
    enc = encounter_resource(sid, gid, float(payload.get("session_start", payload.get("wall", 0.0))),
                             payload.get("session_end"), p_ref)
    e_ref = full_url(*identifier_of(enc))
    out: list[dict[str, Any]] = [patient, enc]
    if kind == "vitals":
        out += vital_observations(sid, gid, float(payload["wall"]), payload["metrics"], p_ref, e_ref)
    elif kind == "vitals_window":
        out += vital_window_observations(sid, gid, float(payload["start_wall"]), float(payload["period_s"]),
                                         payload["series"], p_ref, e_ref)
    elif kind == "ecg_strip":
        out.append(ecg_strip_observation(sid, gid, float(payload["start_wall"]), float(payload["fs"]),
                                         payload["samples_uV"], p_ref, e_ref, payload.get("lead", "II"),
                                         payload.get("reason", "")))
    elif kind == "summary":
        out.append(session_report(sid, gid, float(payload["session_start"]), float(payload["session_end"]),
                                  str(payload.get("conclusion", "")), p_ref, e_ref))
    elif kind != "encounter":
        raise ValueError(f"unknown fhir payload kind {kind!r}")
    return out


def bundle_for_payloads(payloads: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One transaction Bundle carrying several outbox payloads (Patient/Encounter entries deduplicated)."""
    resources: list[dict[str, Any]] = []
    for p in payloads:
        resources += resources_for_payload(p)
    return transaction_bundle(resources)


def validate_resource(resource: dict[str, Any]) -> None:
    """Validate one resource against the fhir.resources R4B model; raise ValueError naming the problem."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except (ValidationError, KeyError) as exc:
        raise ValueError(f"invalid FHIR {resource.get('resourceType')}: {exc}") from None


def validate_bundle(bundle: dict[str, Any]) -> None:
    """Validate every entry's resource and the Bundle itself (R4B)."""
    for entry in bundle.get("entry", []):
        validate_resource(entry["resource"])
    validate_resource({**bundle, "entry": [{k: v for k, v in e.items() if k != "resource"}
                                           for e in bundle.get("entry", [])]})
