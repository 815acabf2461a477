"""Radiology reports (CT-RATE sections) written from the phantom's truth.

Each present finding gets one sentence of its own (never mixed with a negation), phrased with
one of several templates and synonyms and carrying the drawn details (side, lobe, size);
absent findings are either left out or negated ("No pleural effusion."), and normal-anatomy
sentences fill the rest, so a text model cannot key on one fixed template. ``TERMS`` lists the
words that name each finding; the tests use them to check report/label agreement.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Lower-case words that name each finding in a report (any sentence with one "mentions" it).
TERMS: dict[str, tuple[str, ...]] = {
    "Medical material": ("pacemaker", "port catheter", "sternotomy wires", "medical material", "medical device"),
    "Arterial wall calcification": ("aortic calcification", "calcified atherosclerotic plaques in the aorta", "arterial wall calcification", "aortic wall calcification"),
    "Cardiomegaly": ("cardiomegaly", "heart is enlarged", "enlarged heart", "cardiac enlargement"),
    "Pericardial effusion": ("pericardial effusion", "pericardial fluid"),
    "Coronary artery wall calcification": ("coronary artery calcification", "coronary calcification", "calcified coronary plaques", "coronary artery wall calcification"),
    "Hiatal hernia": ("hiatal hernia",),
    "Lymphadenopathy": ("lymphadenopathy", "enlarged lymph nodes", "lymph nodes of pathological size", "enlarged lymph node"),
    "Emphysema": ("emphysema", "emphysematous"),
    "Atelectasis": ("atelectasis", "atelectatic"),
    "Lung nodule": ("nodule", "nodular lesion"),
    "Lung opacity": ("ground-glass", "ground glass"),
    "Pulmonary fibrotic sequela": ("fibrotic sequela", "fibrosis"),
    "Pleural effusion": ("pleural effusion", "pleural fluid"),
    "Mosaic attenuation pattern": ("mosaic attenuation",),
    "Peribronchial thickening": ("peribronchial thickening",),
    "Consolidation": ("consolidation", "consolidative"),
    "Bronchiectasis": ("bronchiectasis",),
    "Interlobular septal thickening": ("septal thickening",),
}
# Words that make a sentence a negation.
NEGATIONS: tuple[str, ...] = ("no ", "not ", "without", "absent", "negative for", "free of")

_NEGATIVE: dict[str, tuple[str, ...]] = {
    "Pleural effusion": ("No pleural effusion.", "No pleural effusion was detected.", "There is no pleural fluid."),
    "Pericardial effusion": ("No pericardial effusion.", "There is no pericardial effusion.", "Pericardial effusion was not observed."),
    "Cardiomegaly": ("Heart size is normal.", "Heart size is within normal limits.", "No cardiomegaly."),
    "Lymphadenopathy": ("No lymphadenopathy in the mediastinum or hila.", "No lymph nodes of pathological size were detected.", "Mediastinal and hilar lymphadenopathy is not seen."),
    "Emphysema": ("No emphysema.", "There are no emphysematous changes."),
    "Lung nodule": ("No pulmonary nodule was detected.", "No nodular lesion in either lung.", "No suspicious nodule."),
    "Consolidation": ("No consolidation.", "There is no focal consolidation in the lungs."),
    "Lung opacity": ("No ground-glass opacity.", "There are no ground-glass densities."),
    "Atelectasis": ("No atelectasis.", "There is no atelectasis."),
    "Hiatal hernia": ("No hiatal hernia.",),
    "Bronchiectasis": ("No bronchiectasis.",),
    "Mosaic attenuation pattern": ("No mosaic attenuation pattern.",),
}
_NORMAL = {
    "airway": ("Trachea and both main bronchi are patent.", "The trachea and main bronchi are open and normal in calibre.",
               "Trachea and main bronchi are in midline and patent."),
    "mediastinum": ("Mediastinal structures are otherwise unremarkable.", "Thoracic aorta is of normal diameter.",
                    "Mediastinal main vascular structures are of normal calibre."),
    "lungs": ("Both lungs are otherwise clear.", "Lung parenchyma is otherwise unremarkable.", "The remaining lung fields are clear."),
    "bones": ("Bony structures within the scan area are unremarkable.", "No lytic or destructive bone lesion.",
              "Degenerative changes are seen in the thoracic spine."),
    "abdomen": ("Upper abdominal organs in the scan area are unremarkable.", "Liver and spleen sections in the scan area are normal."),
}
_CLINICAL = ("Cough.", "Shortness of breath.", "Chest pain.", "Fever and cough.", "Follow-up.", "Screening.",
             "Dyspnea for two weeks.", "Not given.", "Evaluation before surgery.")


def _side(sides: list[str]) -> str:
    return "bilateral" if len(sides) == 2 else sides[0]


def _article(number: int) -> str:
    return "an" if str(number).startswith("8") or number in (11, 18) else "a"


def _positive(name: str, d: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    """(Findings sentence, Impression phrase) for a present finding."""

    def pick(*options: str) -> str:
        return str(rng.choice(options))

    if name == "Lung nodule":
        parts = [f"{_article(n['size_mm'])} {n['size_mm']} mm {pick('nodule', 'nodular lesion', 'solid nodule')} in the {n['lobe']}" for n in d["nodules"]]
        s = "; ".join(parts)
        return pick(f"There is {s}.", f"{s[0].upper()}{s[1:]} is observed." if len(parts) == 1 else f"Noted: {s}."), pick("Pulmonary nodule.", f"Lung nodule{'s' if len(parts) > 1 else ''}, follow-up recommended.")
    if name == "Pleural effusion":
        s = _side(d["sides"])
        return pick(f"{d['amount'].capitalize()} {s} pleural effusion.", f"There is {d['amount']} {s} pleural effusion.",
                    f"{s.capitalize()} pleural fluid is seen in the dependent part."), f"{s.capitalize()} pleural effusion."
    if name == "Atelectasis":
        s = _side(d["sides"])
        if d.get("kind") == "compressive":
            return pick(f"Compressive atelectasis adjacent to the {s} effusion.", f"Passive atelectatic changes in {'both lower lobes' if s == 'bilateral' else f'the {s} lower lobe'}."), "Compressive atelectasis."
        return pick(f"Plate-like atelectasis in the {d['lobe']}.", f"Subsegmental atelectasis is observed in the {d['lobe']}."), "Subsegmental atelectasis."
    if name == "Consolidation":
        return pick(f"Consolidation is observed in the {d['lobe']}.", f"There is a consolidative area in the {d['lobe']}.",
                    f"Patchy consolidation in the {d['lobe']}."), pick("Consolidation, compatible with pneumonia.", f"Consolidation in the {d['lobe']}.")
    if name == "Lung opacity":
        return pick(f"Ground-glass opacities in the {d['lobe']}.", f"There are ground glass densities in the {d['lobe']}.",
                    f"Patchy ground-glass areas are seen in the {d['side']} lung."), pick("Ground-glass opacity.", "Ground glass opacities, likely infectious.")
    if name == "Emphysema":
        return pick(f"{d['pattern'].capitalize()} emphysema, predominantly in the upper lobes.", f"Emphysematous changes in both lungs ({d['pattern']}).",
                    f"There are {d['pattern']} emphysematous areas in both upper lobes."), pick("Emphysema.", f"{d['pattern'].capitalize()} emphysema.")
    if name == "Cardiomegaly":
        return pick("Cardiomegaly.", "The heart is enlarged.", "Cardiac enlargement is observed."), pick("Cardiomegaly.", "Enlarged heart.")
    if name == "Pericardial effusion":
        return pick(f"Pericardial effusion reaching {d['thickness_mm']} mm in thickness.", "There is pericardial effusion.",
                    "Pericardial fluid surrounds the heart."), "Pericardial effusion."
    if name == "Lymphadenopathy":
        st = " and ".join(d["stations"])
        return pick(f"Enlarged lymph nodes in the {st} region, the largest {d['size_mm']} mm.", f"Lymphadenopathy at the {st} station.",
                    f"Lymph nodes of pathological size in the {st} area."), pick("Mediastinal lymphadenopathy.", "Enlarged mediastinal lymph nodes.")
    if name == "Arterial wall calcification":
        where = " and ".join(d["parts"])
        return pick(f"Calcified atherosclerotic plaques in the aorta ({where}).", f"Aortic wall calcification in the {where}.",
                    f"Atherosclerotic aortic calcification is seen in the {where}."), pick("Aortic calcification.", "Atherosclerotic aortic wall calcification.")
    if name == "Coronary artery wall calcification":
        arts = " and ".join(d["arteries"])
        return pick(f"Coronary artery calcification in the {arts} artery territory.", f"Calcified coronary plaques along the {arts}.",
                    "Coronary calcification is present."), "Coronary artery calcification."
    kind = d["kind"]
    return pick(f"A {kind} is seen.", f"Medical material: {kind}.", f"{kind.capitalize()} in place."), f"{kind.capitalize()}."


def write_report(
    findings: dict[str, int],
    details: dict[str, dict[str, Any]],
    rng: np.random.Generator,
    technique: str,
) -> dict[str, str]:
    """The four CT-RATE report sections for one scan."""
    positives = {n: _positive(n, details[n], rng) for n, v in findings.items() if v}

    def negate(name: str) -> str | None:
        """A negation for some absent findings (reports do not list every normal)."""
        return str(rng.choice(_NEGATIVE[name])) if name in _NEGATIVE and rng.random() < 0.6 else None

    def section(names: tuple[str, ...], normal: str) -> list[str]:
        out = [positives[n][0] if n in positives else negate(n) for n in names]
        return [s for s in out if s] + [str(rng.choice(_NORMAL[normal]))]

    mediastinum = section(("Cardiomegaly", "Pericardial effusion", "Arterial wall calcification",
                           "Coronary artery wall calcification", "Lymphadenopathy", "Hiatal hernia"), "mediastinum")
    lungs = section(("Emphysema", "Lung nodule", "Consolidation", "Lung opacity", "Atelectasis",
                     "Pleural effusion", "Bronchiectasis", "Mosaic attenuation pattern"), "lungs")
    other = section(("Medical material",), "bones") + [str(rng.choice(_NORMAL["abdomen"]))]
    airway = [str(rng.choice(_NORMAL["airway"]))]
    body = [airway + mediastinum, lungs, other]
    order = rng.permutation(2)  # lungs first or mediastinum first, as radiologists differ
    paragraphs = [body[i] for i in order] + [body[2]]
    impressions = [positives[n][1] for n in positives]
    if not impressions:
        impressions = [str(rng.choice(("No acute pathology in the thorax.", "Normal chest CT.",
                                       "Thorax CT within normal limits.")))]
    return {
        "ClinicalInformation_EN": str(rng.choice(_CLINICAL)),
        "Technique_EN": technique,
        "Findings_EN": " ".join(" ".join(p) for p in paragraphs),
        "Impressions_EN": " ".join(impressions),
    }
