"""Keyword tables shared by normalization, layout and validation."""

from __future__ import annotations

# annotations: kept once when schemas are merged, never a conflict
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$anchor",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "markdownDescription",
        "deprecationMessage",
        "enumDescriptions",
        "markdownEnumDescriptions",
        "discriminator",
        "fileMatch",
        "allowComments",
        "allowTrailingCommas",
        "id",  # draft 3 / 4 spelling of $id
        "$dynamicAnchor",
        "$recursiveAnchor",
        "$vocabulary",
    }
)
# keywords that only apply to values of one type (dropped when another type is laid out)
TYPE_KEYWORDS = {
    "object": {
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependencies",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
    },
    "array": {
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "additionalItems",
    },
    "string": {"minLength", "maxLength", "pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
}
TYPE_KEYWORDS["integer"] = TYPE_KEYWORDS["number"]
# keywords the layout honours, by type (schema.py; anything else is refused, naming it)
SUPPORTED = {
    "object": {"type"} | TYPE_KEYWORDS["object"],
    "array": {"type", "items", "prefixItems", "minItems", "maxItems", "uniqueItems"},
    "string": {"type"} | TYPE_KEYWORDS["string"],
    "integer": {"type"} | TYPE_KEYWORDS["integer"],
    "number": {"type"} | TYPE_KEYWORDS["number"],
    "boolean": {"type"},
    "null": {"type"},
}
