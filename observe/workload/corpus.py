"""Deterministic synthetic corpora for the reference workload's four text domains.

Domains differ in vocabulary *and* sentence shape (terse clinical notes, short number-heavy
market briefs, long clause-heavy contracts, chatty everyday prose), so a model fine-tuned on
one domain sees a real distribution shift on another. A document is one ``open`` sentence and
1-5 ``body`` sentences; ``{slot}`` markers expand to a random entry of that slot (entries may
hold further slots) or to the output of a number formatter.
"""

import random
import re
from collections.abc import Callable

from observe.errors import ObserveError

DOMAINS: tuple[str, ...] = ("medical", "finance", "legal", "general")

Formatter = Callable[[random.Random], str]
Slot = list[str] | Formatter


def _grammar(spec: str, **formatters: Formatter) -> dict[str, Slot]:
    """Parse ``slot: a|b|c`` lines; an indented line continues the slot above it."""
    grammar: dict[str, Slot] = dict(formatters)
    for name, body in re.findall(r"^(\w+): (.*(?:\n +.*)*)", spec, re.MULTILINE):
        grammar[name] = [entry.strip() for entry in " ".join(body.split()).split("|")]
    return grammar


_MEDICAL = _grammar(
    """
open: Patient is a {age}-year-old {sex} with a history of {dx} who presented with {sx} and
    {sx}.|{age}-year-old {sex} admitted for {dx}; chief complaint {sx}.|Follow-up visit for
    {dx}: patient reports {sx} for {duration}.|Consult note: {age}-year-old {sex} with {dx},
    referred for evaluation of {sx}.
body: Started {rx} {route} {freq}.|Vitals: {vitals}.|Exam notable for {finding}.|{imaging}.|
    {lab}, consistent with {dx}.|Assessment: {dx}, likely secondary to {dx}.|Plan: {plan};
    {plan}.|Discontinued {drug} due to {side_effect}.|{clinician} recommended {rx} {freq} for
    {dx}.|Denies {sx}; reports {sx} for {duration}.|Titrated to {rx} {freq}.|Allergies: {drug}
    (rash).|Labs: {lab}, {lab}.
sex: male|female
dx: hypertension|type 2 diabetes mellitus|community-acquired pneumonia|atrial fibrillation|
    chronic kidney disease stage 3|asthma exacerbation|urinary tract infection|congestive heart
    failure|COPD|migraine|hypothyroidism|cellulitis|deep vein thrombosis|gastroesophageal reflux
    disease|iron deficiency anemia|osteoarthritis|major depressive disorder|acute bronchitis|
    sepsis|hyperlipidemia
sx: chest pain|shortness of breath|fever|productive cough|dizziness|nausea|headache|fatigue|
    abdominal pain|palpitations|lower extremity edema|dysuria|pruritic rash|joint swelling|
    blurred vision|syncope|wheezing|night sweats|unintentional weight loss|lower back pain|
    vomiting|chills
drug: metformin|lisinopril|amoxicillin|atorvastatin|metoprolol|apixaban|furosemide|
    levothyroxine|albuterol|omeprazole|prednisone|sertraline|ceftriaxone|warfarin
rx: metformin 500 mg|metformin 1000 mg|lisinopril 10 mg|lisinopril 40 mg|amoxicillin 875 mg|
    atorvastatin 80 mg|metoprolol 25 mg|apixaban 5 mg|furosemide 40 mg|levothyroxine 50 mcg|
    albuterol 2.5 mg|omeprazole 20 mg|prednisone 40 mg|sertraline 50 mg|ceftriaxone 1 g|
    insulin glargine 12 units|heparin 5000 units|vancomycin 1250 mg
route: orally|PO|IV|intravenously|subcutaneously
freq: once daily|twice daily|every 8 hours|at bedtime|as needed for pain|every 12 hours|three
    times daily|BID|TID|q6h PRN
duration: two days|one week|three weeks|several months|48 hours|ten days
finding: bilateral crackles|a grade 2/6 systolic murmur|right lower quadrant tenderness|pitting
    edema to the knees|jugular venous distension|erythema of the left calf|decreased breath
    sounds at the right base|an irregularly irregular rhythm|dry mucous membranes
imaging: Chest X-ray revealed a left lower lobe infiltrate|CT abdomen/pelvis showed no acute
    findings|Echocardiogram showed an ejection fraction of 35%|Renal ultrasound showed mild
    hydronephrosis|ECG revealed sinus tachycardia|Doppler showed a nonocclusive thrombus|MRI
    brain was unremarkable
lab: HbA1c {x}%|creatinine {x} mg/dL|potassium {x} mmol/L|WBC {x}K|hemoglobin {x} g/dL|
    lactate {x} mmol/L|TSH {x} mIU/L
plan: follow up in clinic in two weeks|repeat BMP in the morning|cardiology consult|titrate
    dose as tolerated|continue telemetry|discharge home with outpatient follow-up|wound care
    twice daily|monitor renal function|encourage oral hydration
side_effect: angioedema|hypotension|GI upset|hyperkalemia|bradycardia|elevated liver enzymes
clinician: Attending|Cardiology|Nephrology|Pharmacy|Infectious disease
""",
    age=lambda r: str(r.randint(19, 93)),
    x=lambda r: f"{r.uniform(1.0, 12.0):.1f}",
    vitals=lambda r: (
        f"BP {r.randint(100, 178)}/{r.randint(58, 104)}, HR {r.randint(52, 124)}, "
        f"T {r.uniform(36.4, 39.6):.1f} C, SpO2 {r.randint(86, 100)}% on room air"
    ),
)

_FINANCE = _grammar(
    """
open: {ticker} {moved} {pct} to {price}.|{company} ({ticker}) reported {quarter} results.|
    Markets: {index} {moved} {pct}.|{ticker} {moved} {pct} premarket.|{quarter} earnings:
    {company} beat.
body: {quarter} revenue was {amount}, up {pct} YoY.|EPS {eps} vs. {eps} est.|{metric} {moved}
    {pct} QoQ.|{broker} cut {ticker} to {rating}; PT {price}.|{broker} raised {ticker} to
    {rating}.|{index} {moved} {pct} at the close.|Volume: {volume} shares.|Guidance: {quarter}
    sales {amount}-{amount}.|Fed held at {rate}; 10Y yield {moved} {bps}.|Dividend raised to
    {eps}/share.|Buyback: {amount} authorized.|Gross margin {pct}, down {bps}.|Shares {moved}
    {pct} after hours.|{commodity} {moved} {pct} to {price}.|P/E now {multiple}x.|Net debt
    {amount}; FCF {amount}.
ticker: NVRX|QLTM|BRKZ|HALV|MRDN|NWEG|APXS|CBRG|STLI|VNTG|ORPH|KSTL|ZENQ|TRLX|PLMB|AURX|DLTA|
    FNXC|GRNV|HLCO|JMPR|LXRA|MVST|QNTA
company: Halvorsen Capital|Meridian Bancorp|Northwind Energy|Apex Semiconductor|Cobalt Retail|
    Sterling Insurance|Vantage Logistics|Orion Pharma|Kestrel Mining|Zenith Software|Trellix
    Payments|Plumb REIT
moved: rose|fell|climbed|slipped|jumped|dropped|gained|declined|surged|sank
quarter: Q1 {year}|Q2 {year}|Q3 {year}|Q4 {year}|FY{year}
metric: Revenue|Net income|Operating margin|Free cash flow|EBITDA|Same-store sales|NII|ARR|
    Bookings|Opex
broker: Kessler & Co.|Barrow Securities|Lindqvist|Harbor Point|Crane Capital
rating: Buy|Hold|Sell|Overweight|Underweight|Outperform|Neutral
index: S&P 500|Nasdaq|Dow|Russell 2000|VIX|Stoxx 600|Nikkei
commodity: WTI crude|Brent|Gold|Copper|Nat gas|Bitcoin
rate: 3.75%|4.25%|4.50%|5.25%|5.50%
""",
    pct=lambda r: f"{r.uniform(0.1, 24.0):.1f}%",
    price=lambda r: f"${r.uniform(4.0, 650.0):,.2f}",
    amount=lambda r: f"${r.uniform(0.2, 95.0):.1f}{r.choice('MB')}",
    eps=lambda r: f"${r.uniform(0.05, 6.5):.2f}",
    bps=lambda r: f"{r.randint(3, 160)} bps",
    volume=lambda r: f"{r.uniform(1.0, 90.0):.1f}M",
    multiple=lambda r: f"{r.uniform(8.0, 60.0):.1f}",
    year=lambda r: str(r.randint(2021, 2026)),
)

_LEGAL = _grammar(
    """
open: This {agreement} is made and entered into as of {date} by and between {entity} and
    {entity}, hereinafter referred to as {party} and {party}, respectively.|Pursuant to
    {section} of the {agreement}, {party} shall, within {period} after the Effective Date,
    {obligation}.|WHEREAS, {party} desires to {purpose}, and WHEREAS, {party} is willing to do
    so upon the terms and subject to the conditions set forth herein.
body: Pursuant to {section}, {party} shall, within {period} after receipt of written notice
    from {party}, {obligation}, provided, however, that {condition}.|Notwithstanding anything
    to the contrary contained herein, {party} shall not {prohibited} without the prior written
    consent of {party}, which consent shall not be unreasonably withheld, conditioned or
    delayed.|In the event that {party} fails to {obligation} within {period}, {party} may, at
    its sole option and without prejudice to any other rights or remedies available at law or
    in equity, {remedy}.|This {agreement} shall be governed by and construed in accordance
    with the laws of {jurisdiction}, without regard to its conflict of laws principles.|Except
    as expressly set forth in {section}, {party} makes no representations or warranties of any
    kind, whether express, implied or statutory, including any implied warranty of
    merchantability or fitness for a particular purpose.|The obligations of {party} under
    {section} shall survive the expiration or earlier termination of the Term for a period of
    {period}.|Any notice required or permitted hereunder shall be in writing and shall be
    deemed given upon personal delivery or {period} after deposit with a nationally recognized
    overnight courier, addressed to {party} at the address set forth in {section}.|Subject to
    {section}, {party} hereby indemnifies and holds harmless {party} from and against any and
    all claims, losses, liabilities and expenses arising out of {cause}.
party: the Lessee|the Lessor|the Licensee|the Licensor|the Borrower|the Lender|the Contractor|
    the Owner|the Indemnifying Party|the Disclosing Party|the Receiving Party|the Purchaser|
    the Seller|the Guarantor
agreement: Lease Agreement|Master Services Agreement|Loan Agreement|Nondisclosure Agreement|
    Asset Purchase Agreement|License Agreement|Guaranty
entity: Ashford Holdings LLC|Briarwood Properties, Inc.|Castellan Partners LP|Dunmore
    Industries Corp.|Everly Trust Company|Fairhaven Ventures LLC|Greystone Realty Inc.
section: Section {n}({letter})|Section {n}.{n}|Article {roman}
letter: a|b|c|d|e|f|g
roman: II|III|IV|VI|VIII|XI
period: thirty (30) days|ten (10) Business Days|sixty (60) days|five (5) Business Days|ninety
    (90) days|fifteen (15) days|one hundred twenty (120) days
date: January {day}, {year}|March {day}, {year}|June {day}, {year}|September {day}, {year}
obligation: cure such default|deliver to {party} a certificate of insurance evidencing
    commercial general liability coverage|pay all taxes, assessments and charges levied upon
    the Premises|return or destroy all Confidential Information|surrender possession of the
    Premises in good order and repair|remit the Purchase Price by wire transfer of immediately
    available funds|obtain all permits, licenses and approvals required by applicable law|
    execute and deliver such further instruments as may be reasonably requested
condition: no Event of Default has occurred and is continuing|such cure is diligently pursued
    to completion|the aggregate liability of {party} hereunder shall not exceed the fees paid
    in the preceding twelve (12) months|{party} has received the written approval of {party}|
    such action does not materially impair the Collateral
prohibited: assign, sublet or otherwise transfer any interest in the Premises|disclose any
    Confidential Information to any third party|grant any lien or security interest in the
    Collateral|make any alteration to the structural elements of the Premises|sublicense any
    of the Licensed Materials
remedy: terminate this Agreement upon written notice|seek injunctive relief|recover its
    reasonable attorneys' fees and costs|declare all sums hereunder immediately due and
    payable|perform such obligation on behalf of {party} at the expense of {party}
jurisdiction: the State of Delaware|the State of New York|England and Wales|the Commonwealth
    of Massachusetts|the State of California
purpose: lease certain premises|obtain a revolving credit facility|license certain software|
    acquire substantially all of the assets of the Seller|engage the Contractor
cause: any breach of the representations and warranties herein|the gross negligence or willful
    misconduct of {party}|any third-party claim of infringement|the use or occupancy of the
    Premises
""",
    n=lambda r: str(r.randint(1, 18)),
    day=lambda r: str(r.randint(1, 28)),
    year=lambda r: str(r.randint(2019, 2026)),
)

_GENERAL = _grammar(
    """
open: {day} we went to {place} and {activity}.|So {person} called me {day} with big news!|I
    can't believe how {weather} it was {day}.|Quick update from our house this week.|Guess
    what we did {day}?
body: It was so {weather} that we stayed home and {activity}.|{person} says the secret to good
    {food} is {tip}.|Honestly, I could eat {food} every day!|Has anyone else tried {hobby}? I
    just started and I love it.|I finally fixed {thing}, so now I feel {feeling}.|After
    dinner {person} and I {activity}.|Next week I want to try {hobby} if it stays {weather}.|
    Don't forget to bring {item} when you come over!|We grabbed {food} on the way home, which
    was perfect.|The kids were {feeling} all afternoon, lol.|Anyway, {person} wants to visit
    {place} soon.|Maybe I'll clean {thing} tomorrow.
person: my neighbor|my sister|my brother|a friend from work|my grandma|my roommate|my mom|my
    dad|my cousin|my best friend|our babysitter
place: the farmers market|the park|the beach|the library|the new bakery downtown|the hiking
    trail|the grocery store|grandma's house|the lake|the movies|the zoo|the county fair
activity: baked banana bread|watched a funny movie|went for a long walk|planted tomatoes|played
    board games|cleaned out the garage|tried a new recipe|rode our bikes|painted the fence|read
    on the porch|built a blanket fort|flew a kite
food: pancakes|pizza|tacos|chicken soup|chocolate chip cookies|lasagna|fried rice|apple pie|
    ice cream|grilled cheese|spaghetti|blueberry muffins
tip: lots of butter|patience|fresh basil|a pinch of salt|a really hot pan|letting it rest
weather: sunny|rainy|windy|chilly|warm|cloudy|snowy|muggy|gorgeous
day: on Saturday|on Sunday|last weekend|yesterday|this morning|on Friday night|over the
    holidays|after school
feeling: tired|happy|relaxed|excited|bored|grateful|hungry|silly|cranky
thing: the garden hose|the kitchen drawer|my bike|the backyard swing|the bathroom sink|the
    bookshelf|the closet|the fridge
hobby: knitting|fishing|photography|gardening|jogging|birdwatching|woodworking|playing guitar|
    jigsaw puzzles|pottery
item: snacks|a sweater|sunscreen|your camera|board games|a blanket|dessert
"""
)

_GRAMMARS = {"medical": _MEDICAL, "finance": _FINANCE, "legal": _LEGAL, "general": _GENERAL}
_SLOT = re.compile(r"\{(\w+)\}")


def _expand(grammar: dict[str, Slot], slot: str, rng: random.Random) -> str:
    choice = grammar[slot]
    text = choice(rng) if callable(choice) else rng.choice(choice)
    return _SLOT.sub(lambda m: _expand(grammar, m.group(1), rng), text)


def _document(grammar: dict[str, Slot], rng: random.Random) -> str:
    sentences = [_expand(grammar, "open", rng)]
    sentences += [_expand(grammar, "body", rng) for _ in range(rng.randint(1, 5))]
    return " ".join(s[0].upper() + s[1:] for s in sentences)


def _check(domain: str, count: int, what: str) -> dict[str, Slot]:
    if domain not in _GRAMMARS:
        raise ObserveError(f"unknown domain {domain!r}: choose one of {', '.join(DOMAINS)}")
    if count < 0:
        raise ObserveError(f"{what} is {count}: pass a count of 0 or more")
    return _GRAMMARS[domain]


def _rng(domain: str, stream: str, seed: int) -> random.Random:
    # String seeds are hashed with SHA-512, not the per-process salted hash(), so output is
    # identical across runs and processes.
    return random.Random(f"{domain}:{stream}:{seed}")


def generate_corpus(domain: str, n_docs: int, *, seed: int = 0) -> list[str]:
    """Return ``n_docs`` one-line documents of 2-6 sentences from ``domain``."""
    grammar = _check(domain, n_docs, "n_docs")
    rng = _rng(domain, "corpus", seed)
    return [_document(grammar, rng) for _ in range(n_docs)]


def generate_prompts(domain: str, n: int, *, seed: int = 0) -> list[str]:
    """Return ``n`` prompts: the first 4-10 words of fresh ``domain`` documents."""
    grammar = _check(domain, n, "prompt count")
    rng = _rng(domain, "prompts", seed)
    return [" ".join(_document(grammar, rng).split()[: rng.randint(4, 10)]) for _ in range(n)]
