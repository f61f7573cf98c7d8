"""Ordinary pydantic models (not written for the layout): nested models ($defs/$ref), Optional,
Literal, Enum, list[Model], dict[str, int], datetime, UUID, EmailStr, constr(pattern), conint and
confloat bounds, discriminated and plain unions, recursion. Their schemas are pydantic's own."""

from __future__ import annotations

import datetime
import enum
import uuid
from ipaddress import IPv4Address
from typing import Literal

from pydantic import AnyUrl, BaseModel, EmailStr, Field, confloat, conint


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str = Field(max_length=20)
    zip_code: int = Field(ge=10000, le=99999)


class User(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    address: Address


class Order(BaseModel):
    id: int
    items: list[Address] = Field(min_length=1, max_length=2)
    note: str | None = None
    color: Color
    status: str = "new"


class Flags(BaseModel):
    on: bool
    level: int | None = Field(default=None, ge=1, le=5)
    mode: str = Field(default="a", max_length=3)


class Tree(BaseModel):
    label: str = Field(max_length=4)
    child: Tree | None = None


class Pair(BaseModel):
    left: Address
    right: Address | None


class Choice(BaseModel):
    pick: int | str  # anyOf of two real types: the first branch is laid out


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(BaseModel):
    pet: Cat | Dog = Field(discriminator="kind")  # a discriminated union: oneOf + discriminator


class Literalish(BaseModel):
    unit: str = Field(json_schema_extra={"enum": ["kg", "lb"]})
    count: int = Field(ge=-5, le=5)


class Tagged(BaseModel):
    kind: str = Field(pattern="^x[a-z]{2}$")  # constr(pattern=...)
    code: str = Field(pattern=r"^[A-Z]{3}-\d{3}$")


class Contact(BaseModel):
    email: EmailStr
    site: AnyUrl | None = None
    host: IPv4Address


class Inventory(BaseModel):
    counts: dict[str, int]  # additionalProperties: a schema
    labels: dict[str, str] = {}


class Stamp(BaseModel):
    at: datetime.datetime
    on: datetime.date
    id: uuid.UUID
    took: datetime.timedelta


class Bounded(BaseModel):
    port: conint(gt=1023, lt=65536)
    ratio: confloat(gt=0, lt=1)
    even: int = Field(multiple_of=2, ge=0, le=100)


class Shape(BaseModel):
    kind: Literal["circle", "square"]
    size: float = Field(ge=0)


class Drawing(BaseModel):
    shapes: list[Shape] = Field(min_length=1, max_length=3)
    color: Color | None = None
    tags: list[str] = Field(default=[], max_length=2)


class Node(BaseModel):
    name: str
    children: list[Node] = []  # a recursive list


class Event(BaseModel):
    kind: Literal["created", "deleted"]
    item: Pet | Shape  # a plain union of models


class Segment(BaseModel):
    ends: tuple[int, int]  # a fixed-length tuple: prefixItems
    label: tuple[str, bool]
    weights: tuple[float, ...] = ()  # a variable-length tuple: items


MODELS = [
    Segment,
    User,
    Order,
    Flags,
    Tree,
    Pair,
    Choice,
    Literalish,
    Address,
    Color,
    Pet,
    Tagged,
    Contact,
    Inventory,
    Stamp,
    Bounded,
    Drawing,
    Node,
    Event,
]


def schema_of(m) -> dict:
    if isinstance(m, type) and issubclass(m, BaseModel):
        return m.model_json_schema()
    return {"$defs": {"Color": {"enum": [c.value for c in m], "type": "string"}}, "$ref": "#/$defs/Color"}
