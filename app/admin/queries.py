"""The review table's filters, sorting and paging, and the dashboard figures, as SQL.

Everything here is a fixed number of queries whatever the page size: the list query joins the
correction in and defers the thumbnail and top-k columns (thumbnails are fetched by URL, one per ``<img>``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from sqlalchemy import Select, and_, case, exists, func, literal_column, or_, select, union_all
from sqlalchemy.orm import aliased, contains_eager, defer

from ..extensions import db
from inference.artifact import CLASS_LEVEL, OTHER_MAKE
from inference.gate import VERDICTS
from ..models import FEEDBACK_WRONG, SOURCES, Correction, Feedback, Prediction

PAGE_SIZES = (25, 50, 100, 200)
STATUSES = ("corrected", "uncorrected", "confirmed", "wrong")
NO_ANSWER = "none"  # the answer-level filter value for predictions no level was sure of
# Visitors' answers: any answer at all, or at least one saying the model was wrong.
VISITOR_FILTERS = {"answered": "visitors answered", "said_wrong": "visitors said wrong"}
SORT_COLUMNS = {
    "created_at": Prediction.created_at,
    "top_label": Prediction.top_label,
    "top_score": Prediction.top_score,
    "model_version": Prediction.model_version,
    "source": Prediction.source,
    "status": Correction.new_label,
}
DAYS_IN_CHART = 30
LABELS_IN_DASHBOARD = 8


def _parse_date(raw: str | None) -> dt.date | None:
    """A calendar day, or None when it does not parse. The last representable day is refused too: a
    day filter compares with the midnight after it, which does not exist after 9999-12-31."""
    try:
        day = dt.date.fromisoformat(raw) if raw else None
    except ValueError:
        return None
    return None if day == dt.date.max else day


def _parse_score(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw not in (None, "") else None
    except ValueError:
        return None
    return min(1.0, max(0.0, value)) if value is not None and math.isfinite(value) else None


def _parse_int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw else default
    except ValueError:
        return default


@dataclass(frozen=True)
class ReviewFilters:
    """What the admin asked for: filters, free text, sort and page.

    Attributes:
        date_from: First day included (UTC).
        date_to: Last day included (UTC).
        label: Exact top label.
        model_version: Exact model version.
        source: ``web``, ``example`` or ``api``.
        verdict: ``ok``, ``uncertain`` or ``not_a_car`` (see :mod:`inference.gate`).
        answer_level: ``class``, a grouping name, or ``none`` (no level was sure).
        score_min: Lowest top score included.
        score_max: Highest top score included.
        low_confidence: Only top scores below the low-confidence threshold.
        status: ``corrected``, ``uncorrected``, ``confirmed`` (model right) or ``wrong``.
        visitors: ``answered`` (a visitor answered "Was this right?") or ``said_wrong`` (one said no).
        q: Free text matched against the top label, the corrected label and the original filename.
        sort: A key of :data:`SORT_COLUMNS`.
        order: ``asc`` or ``desc``.
        page: 1-based page number.
        per_page: One of :data:`PAGE_SIZES`.
    """

    date_from: dt.date | None = None
    date_to: dt.date | None = None
    label: str = ""
    model_version: str = ""
    source: str = ""
    verdict: str = ""
    answer_level: str = ""
    score_min: float | None = None
    score_max: float | None = None
    low_confidence: bool = False
    status: str = ""
    visitors: str = ""
    q: str = ""
    sort: str = "created_at"
    order: str = "desc"
    page: int = 1
    per_page: int = PAGE_SIZES[0]

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> "ReviewFilters":
        """Read the query string, dropping values that do not parse rather than failing the page."""
        sort = args.get("sort", "created_at")
        per_page = _parse_int(args.get("per_page"), PAGE_SIZES[0])
        return cls(
            date_from=_parse_date(args.get("date_from")),
            date_to=_parse_date(args.get("date_to")),
            label=args.get("label", "").strip()[:255],
            model_version=args.get("model_version", "").strip()[:64],
            source=args.get("source", "") if args.get("source") in SOURCES else "",
            verdict=args.get("verdict", "") if args.get("verdict") in VERDICTS else "",
            answer_level=args.get("answer_level", "").strip()[:64],
            score_min=_parse_score(args.get("score_min")),
            score_max=_parse_score(args.get("score_max")),
            low_confidence=args.get("low_confidence") in ("1", "on", "true", "y"),
            status=args.get("status", "") if args.get("status") in STATUSES else "",
            visitors=args.get("visitors", "") if args.get("visitors") in VISITOR_FILTERS else "",
            q=args.get("q", "").strip()[:200],
            sort=sort if sort in SORT_COLUMNS else "created_at",
            order="asc" if args.get("order") == "asc" else "desc",
            page=max(1, _parse_int(args.get("page"), 1)),
            per_page=per_page if per_page in PAGE_SIZES else PAGE_SIZES[0],
        )

    def to_args(self, **changes: Any) -> dict[str, str]:
        """The non-default values as query-string arguments, with ``changes`` applied (for links)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)} | changes
        default = ReviewFilters()
        args = {}
        for name, value in values.items():
            if value in (None, "", False) or value == getattr(default, name):
                continue
            args[name] = "1" if value is True else str(value)
        return args

    @property
    def active(self) -> bool:
        """Whether any filter narrows the set (sort and paging do not count)."""
        return bool(self.filter_args())

    def filter_args(self) -> dict[str, str]:
        """Only the filter arguments (no sort, order or page): for the CSV link and the dashboard."""
        return {k: v for k, v in self.to_args().items() if k not in ("sort", "order", "page", "per_page")}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains(column, pattern: str):
    """Case-insensitive ``LIKE`` of an escaped pattern.

    SQLite's own ``LIKE`` already ignores ASCII case, which is all its ``lower()`` folds, so the
    ``lower(x) LIKE lower(p)`` that ``ilike`` emits there does the same match three times slower.
    """
    if db.session.get_bind().dialect.name == "sqlite":
        return column.like(pattern, escape="\\")
    return column.ilike(pattern, escape="\\")


def filtered(statement: Select, filters: ReviewFilters, low_confidence_below: float) -> Select:
    """Add the WHERE clauses of ``filters`` to a statement over predictions outer-joined to corrections.

    Args:
        statement: A SELECT whose FROM has ``predictions`` LEFT OUTER JOIN ``corrections``.
        filters: The admin's filters.
        low_confidence_below: Threshold for ``low_confidence``.

    Returns:
        The narrowed statement.
    """
    conditions = []
    if filters.date_from:
        conditions.append(Prediction.created_at >= dt.datetime.combine(filters.date_from, dt.time()))
    if filters.date_to:
        end = dt.datetime.combine(filters.date_to + dt.timedelta(days=1), dt.time())
        conditions.append(Prediction.created_at < end)
    if filters.label:
        conditions.append(Prediction.top_label == filters.label)
    if filters.model_version:
        conditions.append(Prediction.model_version == filters.model_version)
    if filters.source:
        conditions.append(Prediction.source == filters.source)
    if filters.verdict:
        conditions.append(Prediction.verdict == filters.verdict)
    if filters.answer_level == NO_ANSWER:
        conditions.append(Prediction.answer_level.is_(None))
    elif filters.answer_level:
        conditions.append(Prediction.answer_level == filters.answer_level)
    if filters.score_min is not None:
        conditions.append(Prediction.top_score >= filters.score_min)
    if filters.score_max is not None:
        conditions.append(Prediction.top_score <= filters.score_max)
    if filters.low_confidence:
        conditions.append(Prediction.top_score < low_confidence_below)
    if filters.status == "corrected":
        conditions.append(Correction.id.is_not(None))
    elif filters.status == "uncorrected":
        conditions.append(Correction.id.is_(None))
    elif filters.status == "confirmed":
        conditions.append(Correction.new_label == Correction.old_label)
    elif filters.status == "wrong":
        conditions.append(Correction.new_label != Correction.old_label)
    if filters.visitors:
        answer = aliased(Feedback)  # apart from the feedback rows the dashboard's own query joins
        answers = select(answer.id).where(answer.prediction_id == Prediction.id)
        if filters.visitors == "said_wrong":
            answers = answers.where(answer.verdict.in_(FEEDBACK_WRONG))
        conditions.append(exists(answers))
    if filters.q:
        pattern = f"%{_escape_like(filters.q)}%"
        conditions.append(or_(*(_contains(column, pattern) for column in
                                (Prediction.top_label, Prediction.original_filename, Correction.new_label))))
    return statement.where(and_(*conditions)) if conditions else statement


def _joined(statement: Select) -> Select:
    return statement.select_from(Prediction).outerjoin(Correction, Correction.prediction_id == Prediction.id)


def list_statement(filters: ReviewFilters, low_confidence_below: float) -> Select:
    """Predictions with their corrections, filtered and sorted, without the blob columns.

    The ``id`` tie-breaker keeps the order total, so pages neither repeat nor skip rows.
    """
    column = SORT_COLUMNS[filters.sort]
    direction = (lambda c: c.asc()) if filters.order == "asc" else (lambda c: c.desc())
    statement = (_joined(select(Prediction))
                 .options(contains_eager(Prediction.correction), defer(Prediction.thumbnail),
                          defer(Prediction.top_k))
                 .order_by(direction(column), direction(Prediction.id)))
    return filtered(statement, filters, low_confidence_below)


@dataclass
class Page:
    """One page of the review table."""

    items: list[Prediction]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


def review_page(filters: ReviewFilters, low_confidence_below: float, total: int | None = None) -> Page:
    """The requested page's rows (one query), plus the filtered count unless ``total`` already is it."""
    count = total if total is not None else db.session.scalar(
        filtered(_joined(select(func.count(Prediction.id))), filters, low_confidence_below))
    page = min(filters.page, max(1, math.ceil(count / filters.per_page)))
    rows = db.session.scalars(list_statement(filters, low_confidence_below)
                              .limit(filters.per_page).offset((page - 1) * filters.per_page)).unique().all()
    return Page(list(rows), count, page, filters.per_page)


@dataclass
class Dashboard:
    """Figures for the strip above the table, over the filtered set."""

    per_day: list[tuple[dt.date, int]]
    labels: list[tuple[str, int]]
    total: int
    mean_confidence: float | None
    versions: list[dict[str, Any]]


def right_at_level(level: str, answer_label: str, true_label: str, group_of: dict[str, dict[str, str]]) -> bool:
    """Whether an answer agrees with the admin's true label at the answer's own level.

    "A BMW" for a photo corrected to "BMW M5 Sedan 2010" was right: it claimed the make, not the model.

    Args:
        level: The answer's level (``class``, ``make``, ``segment`` ...).
        answer_label: What the answer said at that level.
        true_label: The class an admin set (or confirmed).
        group_of: ``{grouping: {class label: group label}}`` of the serving model.
    """
    if level == CLASS_LEVEL:
        return answer_label == true_label
    members = group_of.get(level, {})
    if answer_label == OTHER_MAKE:
        # "A make this model does not know" was right when the true class is none of the model's.
        return bool(members) and true_label not in members
    return members.get(true_label) == answer_label


def dashboard(filters: ReviewFilters, low_confidence_below: float,
              group_of: dict[str, dict[str, str]] | None = None) -> Dashboard:
    """Predictions per day (latest days with data), top labels, mean confidence, per-version accuracy (of
    the top label, and of the answer at its own level) and the share of visitors' answers that said wrong.

    Five queries, whatever the number of rows.

    Args:
        filters: The review filters.
        low_confidence_below: Threshold of the low-confidence filter.
        group_of: ``{grouping: {class label: group label}}`` of the serving model, to judge make and
            segment answers; without it only class-level answers can be judged.
    """
    day = func.date(Prediction.created_at)
    per_day_rows = db.session.execute(
        filtered(_joined(select(day, func.count(Prediction.id))), filters, low_confidence_below)
        .group_by(day).order_by(day.desc()).limit(DAYS_IN_CHART)).all()
    per_day = sorted((dt.date.fromisoformat(str(d)[:10]), n) for d, n in per_day_rows if d is not None)

    label_rows = db.session.execute(
        filtered(_joined(select(Prediction.top_label, func.count(Prediction.id))), filters, low_confidence_below)
        .group_by(Prediction.top_label).order_by(func.count(Prediction.id).desc(), Prediction.top_label)
        .limit(LABELS_IN_DASHBOARD)).all()

    total, mean = db.session.execute(
        filtered(_joined(select(func.count(Prediction.id), func.avg(Prediction.top_score))), filters,
                 low_confidence_below)).one()

    wrong = case((Correction.new_label != Correction.old_label, 1), else_=0)
    # Visitors' answers, one row per answered prediction, joined into the same per-version statement.
    answers = (select(Feedback.prediction_id, func.count(Feedback.id).label("answers"),
                      func.sum(case((Feedback.verdict.in_(FEEDBACK_WRONG), 1), else_=0)).label("said_wrong"))
               .group_by(Feedback.prediction_id).subquery())
    version_rows = db.session.execute(
        filtered(_joined(select(Prediction.model_version, func.count(Prediction.id), func.count(Correction.id),
                                func.coalesce(func.sum(wrong), 0), func.coalesce(func.sum(answers.c.answers), 0),
                                func.coalesce(func.sum(answers.c.said_wrong), 0)))
                 .outerjoin(answers, answers.c.prediction_id == Prediction.id), filters, low_confidence_below)
        .group_by(Prediction.model_version).order_by(Prediction.model_version)).all()
    # Reviewed answers, one row per distinct (version, answer, true label): few, whatever the number of rows.
    # Driven from the corrections, so only reviewed rows are read (the answer columns are in no index).
    level_rows = db.session.execute(
        filtered(select(Prediction.model_version, Prediction.answer_level, Prediction.answer_label,
                        Correction.new_label, func.count(Prediction.id))
                 .select_from(Correction).join(Prediction, Prediction.id == Correction.prediction_id)
                 .where(Prediction.answer_level.is_not(None)),
                 filters, low_confidence_below)
        .group_by(Prediction.model_version, Prediction.answer_level, Prediction.answer_label,
                  Correction.new_label)).all()
    at_level: dict[str, list[int]] = {}
    for version, level, label, true_label, n in level_rows:
        counts = at_level.setdefault(version, [0, 0])
        counts[0] += n
        counts[1] += n if right_at_level(level, label, true_label, group_of or {}) else 0
    versions = [version_stats(*row, *at_level.get(row[0], (0, 0))) for row in version_rows]
    return Dashboard(per_day, [(label, n) for label, n in label_rows], total or 0,
                     float(mean) if mean is not None else None, versions)


def version_stats(version: str, predictions: int, corrected: int, wrong: int, visitor_answers: int = 0,
                  visitors_said_wrong: int = 0, answers_reviewed: int = 0, answers_right: int = 0
                  ) -> dict[str, Any]:
    """Live accuracy of one model version, measured on the predictions an admin has reviewed, and the
    visitors' view of it (a signal that costs no admin time, never taken as ground truth).

    Args:
        version: Model version.
        predictions: Predictions served by it.
        corrected: How many of them carry a correction (confirmed or relabelled).
        wrong: How many corrections changed the label.
        visitor_answers: Visitors' answers to "Was this right?" about its predictions.
        visitors_said_wrong: How many of those answers said no (wrong, not a car, or unknown).
        answers_reviewed: Reviewed predictions that had an answer (at any level).
        answers_right: How many of those answers agreed with the true label at their own level.

    Returns:
        A row for the dashboard; the shares are None while nothing was reviewed or answered.
    """
    return {
        "version": version,
        "predictions": predictions,
        "corrected": corrected,
        "wrong": wrong,
        "wrong_share": wrong / corrected if corrected else None,
        "live_accuracy": (corrected - wrong) / corrected if corrected else None,
        "visitor_answers": visitor_answers,
        "visitors_said_wrong": visitors_said_wrong,
        "visitor_wrong_share": visitors_said_wrong / visitor_answers if visitor_answers else None,
        "answers_reviewed": answers_reviewed,
        "answer_accuracy": answers_right / answers_reviewed if answers_reviewed else None,
    }


@dataclass
class VisitorSummary:
    """What visitors answered about one prediction: counts per verdict and the labels they suggested."""

    counts: dict[str, int]
    suggestions: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def visitor_summary(prediction_id: int) -> VisitorSummary:
    """Visitors' answers about ``prediction_id``: per verdict, and suggested labels, most suggested first."""
    counts = dict(db.session.execute(select(Feedback.verdict, func.count(Feedback.id))
                                     .where(Feedback.prediction_id == prediction_id)
                                     .group_by(Feedback.verdict)).all())
    suggestions = db.session.execute(
        select(Feedback.label, func.count(Feedback.id))
        .where(Feedback.prediction_id == prediction_id, Feedback.label.is_not(None))
        .group_by(Feedback.label).order_by(func.count(Feedback.id).desc(), Feedback.label)).all()
    return VisitorSummary(counts, [(label, n) for label, n in suggestions])


def filter_choices() -> dict[str, list[str]]:
    """Distinct model versions, top labels and answer levels for the filter inputs (read from indexes).

    The two short lists, versions and answer levels, come back in one statement, so the answer-level
    filter costs the review page no extra round trip (README "Admin": a fixed number of statements).
    """
    def distinct(kind: int, column, *where):
        values = select(column.label("value")).where(*where).distinct().subquery()
        return select(literal_column(str(kind)).label("kind"), values.c.value)

    short = union_all(distinct(0, Prediction.model_version),
                      distinct(1, Prediction.answer_level, Prediction.answer_level.is_not(None)))
    choices: dict[str, list[str]] = {"versions": [], "answer_levels": []}
    for kind, value in db.session.execute(short.order_by("kind", "value")):
        choices["answer_levels" if kind else "versions"].append(value)
    choices["answer_levels"].append(NO_ANSWER)
    choices["labels"] = list(db.session.scalars(select(Prediction.top_label).distinct()
                                                .order_by(Prediction.top_label)))
    return choices
