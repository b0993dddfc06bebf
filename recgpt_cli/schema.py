"""Typed records that flow between stages. The LLM stages derive their JSON schemas from models like these."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_ts(cls, v: Any) -> Any:
        # Epoch seconds are common in logs; ISO-8601 strings go through pydantic's parser.
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return datetime.fromtimestamp(v, tz=timezone.utc)
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
        parts.append(f"{loc}: {msg}" if loc != "record" else msg)
    return "; ".join(parts)
