"""Typed records: the import rows (User, Item, Behavior) and one model per stage output (STYLE §18).

Stage records carry `kind` (which stage wrote them) and `kind_version`. Every stage validates its input against
the kind it expects, so a file from the wrong stage is reported as such (`expected recgpt mine-interests output,
got recgpt predict-tags output`) instead of half-working. Records written before kinds existed are recognised by
their fields. Ids and texts are separate fields: `interest_id` ("I1") and `interest` (the words).
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class BehaviorType(str, Enum):
    click = "click"
    detail_view = "detail_view"
    favorite = "favorite"
    cart = "cart"
    purchase = "purchase"
    review_read = "review_read"
    search = "search"
    rating = "rating"


BEHAVIOR_TYPES: tuple[str, ...] = tuple(b.value for b in BehaviorType)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _no_bool(v: Any) -> Any:
    # pydantic's lax mode reads true as 1: a price, count or rating of `true` is a broken export, not a number
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {str(v).lower()}")
    return v


class User(Record):
    user_id: str = Field(min_length=1)
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("user_id", mode="before")
    @classmethod
    def _id_to_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class Item(Record):
    item_id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    # Root-to-leaf, e.g. ["Home", "Kitchen", "Cookware"]; a "A > B > C" string is accepted too.
    category: list[str] = Field(default_factory=list)
    brand: str | None = None
    price: float | None = Field(default=None, ge=0)
    sales: int | None = Field(default=None, ge=0)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("item_id", mode="before")
    @classmethod
    def _id_to_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("price", "sales", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return _no_bool(v)

    @field_validator("category", mode="before")
    @classmethod
    def _split_path(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.split(">") if p.strip()]
        return v


class Behavior(Record):
    """One user action. Searches carry `query` and no item; every other type names an item."""

    user_id: str = Field(min_length=1)
    type: BehaviorType
    timestamp: datetime
    item_id: str | None = None
    query: str | None = None
    value: float | None = None  # the rating, for type == rating

    @field_validator("user_id", "item_id", mode="before")
    @classmethod
    def _id_to_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("value", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return _no_bool(v)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_ts(cls, v: Any) -> Any:
        # Epoch seconds are common in logs; ISO-8601 strings go through pydantic's parser.
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                return datetime.fromtimestamp(v, tz=timezone.utc)
            except (OverflowError, OSError, ValueError):
                raise ValueError(f"epoch seconds {v} is outside years 1..9999") from None
        return v

    @field_validator("timestamp")
    @classmethod
    def _naive_utc(cls, v: datetime) -> datetime:
        # DuckDB TIMESTAMP is naive; store UTC.
        return v.astimezone(timezone.utc).replace(tzinfo=None) if v.tzinfo else v

    @model_validator(mode="after")
    def _item_or_query(self) -> Behavior:
        if self.type is BehaviorType.search:
            if not self.query:
                raise ValueError("a search behaviour needs a non-empty 'query'")
        elif not self.item_id:
            raise ValueError(f"a {self.type.value} behaviour needs an 'item_id'")
        if self.type is BehaviorType.rating and self.value is None:
            raise ValueError("a rating behaviour needs a numeric 'value'")
        return self


def describe_validation_error(exc: Exception) -> str:
    """One readable line from a pydantic ValidationError: `field: message; field: message`."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "record"
        msg = err.get("msg", "invalid")
        if err.get("type") == "missing":
            msg = "missing required field"
        elif err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif err.get("type") == "enum":
            msg = f"unknown value {err.get('input')!r}; expected one of {', '.join(BEHAVIOR_TYPES)}"
        elif err.get("type") == "value_error":
            msg = msg.removeprefix("Value error, ")  # our own validators' words, without pydantic's label
        parts.append(f"{loc}: {msg}" if loc != "record" else msg)
    return "; ".join(parts)



# ---- stage records ------------------------------------------------------------------------------------------

RECORD_VERSION = 1


def _id_str(v: Any) -> Any:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class StageRecord(BaseModel):
    """Base of every stage output. `KIND` names it in files, `STAGE` is the command that writes it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    KIND: ClassVar[str] = ""
    STAGE: ClassVar[str] = ""
    kind_version: int = RECORD_VERSION

    @field_validator("kind_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > RECORD_VERSION:
            raise ValueError(f"record version {v} is newer than this recgpt reads ({RECORD_VERSION}); upgrade recgpt")
        return v

    def to_row(self) -> dict[str, Any]:
        """The JSONL row: `kind` first, then the fields, unset optional ones left out."""
        return {"kind": self.KIND, **self.model_dump(by_alias=True, exclude_none=True, exclude={"kind"})}


class RecentItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str | None = None
    title: str | None = None
    category_leaf: str | None = None
    category: str | list[str] | None = None
    query: str | None = None
    timestamp: str | float | None = None

    @field_validator("item_id", mode="before")
    @classmethod
    def _ids_to_str(cls, v: Any) -> Any:
        return _id_str(v)


class CompressedUser(StageRecord):
    """`recgpt compress` output: one user's reliable behaviour as compressed text (§2.1.1)."""

    KIND: ClassVar[str] = "compressed"
    STAGE: ClassVar[str] = "recgpt compress"
    kind: Literal["compressed"] = "compressed"
    user_id: str = Field(min_length=1)
    attributes: dict[str, Any] = Field(default_factory=dict)
    date: str | None = None
    compressed: str
    n_behaviors: int | None = None
    n_tokens_raw: int | None = None
    n_tokens_compressed: int | None = None
    truncated: bool | None = None
    periods_dropped: int | None = None
    n_items: int | None = None
    n_items_shown: int | None = None
    recent_items: list[RecentItem | str] = Field(default_factory=list)
    recent_queries: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    # provenance (issue 8): the stored split/phase the history was cut for, and the user's cut timestamp
    split: str | None = None
    phase: str | None = None
    cut: str | None = None
    split_id: str | None = None  # which version of the stored split (`SplitData.split_id`)

    @field_validator("user_id", mode="before")
    @classmethod
    def _ids_to_str(cls, v: Any) -> Any:
        return _id_str(v)


class Interest(BaseModel):
    """One mined interest (§2.1.2). `id` is read as `interest_id` (files written before they were split)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    interest_id: str = Field(min_length=1, validation_alias=AliasChoices("interest_id", "id"))
    interest: str = Field(min_length=1)
    stage: str | None = None
    reason: str | None = None
    preset: bool | None = None


class InterestsRecord(CompressedUser):
    """`recgpt mine-interests` output: the compressed user plus its interests; `error` when the call failed."""

    KIND: ClassVar[str] = "interests"
    STAGE: ClassVar[str] = "recgpt mine-interests"
    kind: Literal["interests"] = "interests"  # type: ignore[assignment]
    interests: list[Interest]
    interest_rules_removed: dict[str, int] = Field(default_factory=dict)
    interest_resamples: int = Field(default=0, ge=0)  # extra asks after a reply the rules found bad reasons in
    error: str | None = None


class Tag(BaseModel):
    """One predicted item tag (§2.2.1), linked to the interest it serves by id and by text."""

    model_config = ConfigDict(extra="forbid")
    tag: str = Field(min_length=1)
    interest_id: str | None = None
    interest: str | None = None
    reason: str | None = None
    explore: bool | None = None  # predict-tags --explore: a neighbour category the history never shows


class TagsRecord(InterestsRecord):
    """`recgpt predict-tags` output: the interests record plus tags; `tag_errors` lists failed calls."""

    KIND: ClassVar[str] = "tags"
    STAGE: ClassVar[str] = "recgpt predict-tags"
    kind: Literal["tags"] = "tags"  # type: ignore[assignment]
    tags: list[Tag]
    tag_rules_removed: dict[str, int] = Field(default_factory=dict)
    catalogue_rules: bool | None = None  # predict-tags --db: brand / implausible / invalid rules ran
    tag_errors: list[dict[str, Any]] | None = None
    tags_unavailable: list[str] | None = None  # --constrain: interests with no fresh, valid product left (no call)


class Recommendation(StageRecord):
    """`recgpt retrieve` output: one (user, item) with its rank, score and the tag that found it (§2.3.3)."""

    KIND: ClassVar[str] = "recommendation"
    STAGE: ClassVar[str] = "recgpt retrieve"
    kind: Literal["recommendation"] = "recommendation"
    user_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    rank: int | None = None
    score: float | None = None
    tag: str | None = None
    interest_id: str | None = None
    interest: str | None = None
    split: str | None = None  # the tag's provenance (issue 8), on rows a tag produced
    phase: str | None = None
    split_id: str | None = None  # the version of the split the model trained on (every row of `retrieve`)
    exclude: str | None = None  # "all": a serving list (`retrieve --exclude all`), which `evaluate` refuses

    @field_validator("user_id", "item_id", mode="before")
    @classmethod
    def _ids_to_str(cls, v: Any) -> Any:
        return _id_str(v)


class Explanation(StageRecord):
    """`recgpt explain` output: one explanation per recommended item (§2.4)."""

    KIND: ClassVar[str] = "explanation"
    STAGE: ClassVar[str] = "recgpt explain"
    kind: Literal["explanation"] = "explanation"
    user_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    explanation: str
    interest_id: str | None = None
    interest: str | None = None
    source: str | None = None
    title: str | None = None
    category: list[str] | str | None = None

    @field_validator("user_id", "item_id", mode="before")
    @classmethod
    def _ids_to_str(cls, v: Any) -> Any:
        return _id_str(v)


class Verdict(StageRecord):
    """`recgpt judge` output: per-criterion verdicts on one sample (§3)."""

    KIND: ClassVar[str] = "verdict"
    STAGE: ClassVar[str] = "recgpt judge"
    kind: Literal["verdict"] = "verdict"
    task: str
    sample_id: str
    input: dict[str, Any] = Field(default_factory=dict)
    verdicts: dict[str, str] = Field(default_factory=dict)
    passed: bool = Field(alias="pass")
    rules: list[str] | None = None
    error: str | None = None


STAGE_RECORDS: dict[str, type[StageRecord]] = {
    m.KIND: m for m in (CompressedUser, InterestsRecord, TagsRecord, Recommendation, Explanation, Verdict)
}


def record_kind(obj: dict[str, Any]) -> str | None:
    """The record's `kind`, or for records without one the stage its fields say wrote it (None: no stage's)."""
    kind = obj.get("kind")
    if isinstance(kind, str):
        return kind
    for key, name in (("verdicts", "verdict"), ("explanation", "explanation"), ("tags", "tags"),
                      ("interests", "interests"), ("compressed", "compressed")):
        if key in obj:
            return name
    if "item_id" in obj and "user_id" in obj and set(obj) <= set(Recommendation.model_fields):
        return "recommendation"
    return None


def parse_stage_record(obj: dict[str, Any], *expected: type[StageRecord]) -> StageRecord:
    """Validate `obj` as one of the `expected` stage records. ValueError (one readable line) names what was
    expected and what was found: another stage's output, or the fields that are wrong."""
    want = " or ".join(f"{m.STAGE} output (kind {m.KIND!r})" for m in expected)
    kind = record_kind(obj)
    model = next((m for m in expected if m.KIND == kind), None)
    if model is None:
        if kind in STAGE_RECORDS:
            raise ValueError(f"expected {want}, got {STAGE_RECORDS[kind].STAGE} output (kind {kind!r})")
        if kind is not None:
            raise ValueError(f"expected {want}, got a record of unknown kind {kind!r}")
        raise ValueError(f"expected {want}, got a record no recgpt stage writes (fields: "
                         f"{', '.join(sorted(obj)[:8]) or 'none'})")
    data = {k: v for k, v in obj.items() if k != "kind"}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"not valid {model.STAGE} output: {describe_validation_error(exc)}") from None


def stage_row(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """A stage's output row stamped with its `kind` and `kind_version` (first, for people reading the file)."""
    return {"kind": kind, "kind_version": RECORD_VERSION,
            **{k: v for k, v in row.items() if k not in ("kind", "kind_version")}}
