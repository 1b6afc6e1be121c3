#include "pipeline/contract/json_schema.h"

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "pipeline/contract/json_schema_formats.h"
#include "rapidjson/document.h"

namespace wharf::pipeline::contract {
namespace {

rapidjson::Document Parse(std::string_view json) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseFullPrecisionFlag>(json.data(),
                                                                                 json.size());
  EXPECT_FALSE(doc.HasParseError()) << json;
  return doc;
}

std::shared_ptr<const JsonSchema> MustCompile(std::string_view schema,
                                              const JsonSchemaOptions& options = {}) {
  auto compiled = JsonSchema::Compile(schema, options);
  EXPECT_TRUE(compiled.ok()) << schema << ": " << compiled.status();
  return compiled.ok() ? *compiled : nullptr;
}

std::string CompileError(std::string_view schema, const JsonSchemaOptions& options = {}) {
  auto compiled = JsonSchema::Compile(schema, options);
  if (compiled.ok()) return "<compiled>";
  EXPECT_EQ(compiled.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(compiled.status().message());
}

struct Outcome {
  bool valid = false;
  SchemaViolation violation;
};

Outcome Check(const JsonSchema& schema, std::string_view instance) {
  rapidjson::Document doc = Parse(instance);
  Outcome out;
  out.valid = schema.Validate(doc, &out.violation);
  return out;
}

// One keyword case: `instance` against `schema` must give `valid`; when invalid, the violation
// must name `keyword` at `pointer`.
struct KeywordCase {
  const char* schema;
  const char* instance;
  bool valid;
  const char* keyword;
  const char* pointer;
};

void RunCases(const std::vector<KeywordCase>& cases) {
  for (const KeywordCase& c : cases) {
    auto schema = MustCompile(c.schema);
    if (schema == nullptr) continue;
    Outcome out = Check(*schema, c.instance);
    EXPECT_EQ(out.valid, c.valid) << c.schema << " / " << c.instance << ": "
                                  << out.violation.message;
    if (!c.valid && !out.valid) {
      EXPECT_EQ(out.violation.keyword, c.keyword) << c.schema << " / " << c.instance;
      EXPECT_EQ(out.violation.pointer, c.pointer) << c.schema << " / " << c.instance;
      EXPECT_FALSE(out.violation.message.empty());
    }
    // Validation without a violation sink gives the same answer.
    rapidjson::Document doc = Parse(c.instance);
    EXPECT_EQ(schema->Validate(doc, nullptr), c.valid) << c.schema << " / " << c.instance;
  }
}

TEST(JsonSchemaTest, TypeKeyword) {
  RunCases({
      {R"({"type":"string"})", R"("a")", true, "", ""},
      {R"({"type":"string"})", "1", false, "type", ""},
      {R"({"type":"integer"})", "1", true, "", ""},
      {R"({"type":"integer"})", "1.0", true, "", ""},  // zero fractional part
      {R"({"type":"integer"})", "1.5", false, "type", ""},
      {R"({"type":"integer"})", "18446744073709551615", true, "", ""},
      {R"({"type":"integer"})", "1e300", true, "", ""},
      {R"({"type":"number"})", "1.5", true, "", ""},
      {R"({"type":"number"})", R"("1")", false, "type", ""},
      {R"({"type":"null"})", "null", true, "", ""},
      {R"({"type":"boolean"})", "false", true, "", ""},
      {R"({"type":"boolean"})", "0", false, "type", ""},
      {R"({"type":"object"})", "{}", true, "", ""},
      {R"({"type":"array"})", "{}", false, "type", ""},
      {R"({"type":["string","null"]})", "null", true, "", ""},
      {R"({"type":["string","null"]})", "[]", false, "type", ""},
  });
}

TEST(JsonSchemaTest, EnumAndConstUseJsonEquality) {
  RunCases({
      {R"({"enum":[1,"a",null]})", "1.0", true, "", ""},
      {R"({"enum":[1,"a",null]})", R"("b")", false, "enum", ""},
      {R"({"enum":[{"a":1,"b":[1,2]}]})", R"({"b":[1,2.0],"a":1})", true, "", ""},
      {R"({"enum":[{"a":1,"b":[1,2]}]})", R"({"b":[2,1],"a":1})", false, "enum", ""},
      {R"({"const":1})", "1.0", true, "", ""},
      {R"({"const":1})", "true", false, "const", ""},
      {R"({"const":false})", "0", false, "const", ""},
      {R"({"const":{"x":{"y":[null]}}})", R"({"x":{"y":[null]}})", true, "", ""},
      {R"({"const":{"x":{"y":[null]}}})", R"({"x":{"y":[null],"z":1}})", false, "const", ""},
      {R"({"const":18446744073709551615})", "18446744073709551615", true, "", ""},
      {R"({"const":9007199254740993})", "9007199254740992", false, "const", ""},
      // Keyword-looking content of enum / const is data, not schema.
      {R"({"enum":[{"$ref":"#/nowhere","requried":1}]})", R"({"requried":1,"$ref":"#/nowhere"})",
       true, "", ""},
  });
}

TEST(JsonSchemaTest, NumericKeywords) {
  RunCases({
      {R"({"minimum":0})", "0", true, "", ""},
      {R"({"minimum":0})", "-3", false, "minimum", ""},
      {R"({"minimum":0})", R"("x")", true, "", ""},  // only numbers are constrained
      {R"({"exclusiveMinimum":0})", "0", false, "exclusiveMinimum", ""},
      {R"({"exclusiveMinimum":0})", "0.0001", true, "", ""},
      {R"({"maximum":1.5})", "1.5", true, "", ""},
      {R"({"maximum":1.5})", "2", false, "maximum", ""},
      {R"({"exclusiveMaximum":10})", "10", false, "exclusiveMaximum", ""},
      {R"({"maximum":9223372036854775807})", "9223372036854775808", false, "maximum", ""},
      {R"({"maximum":18446744073709551615})", "18446744073709551615", true, "", ""},
      {R"({"minimum":-9223372036854775808})", "-9223372036854775808", true, "", ""},
      {R"({"maximum":9007199254740992})", "9007199254740993", false, "maximum", ""},
      {R"({"multipleOf":3})", "9", true, "", ""},
      {R"({"multipleOf":3})", "10", false, "multipleOf", ""},
      {R"({"multipleOf":3})", "-9223372036854775807", false, "multipleOf", ""},
      {R"({"multipleOf":2})", "-9223372036854775808", true, "", ""},
      {R"({"multipleOf":0.0001})", "0.0075", true, "", ""},
      {R"({"multipleOf":0.0001})", "0.00751", false, "multipleOf", ""},
      {R"({"multipleOf":0.01})", "19.99", true, "", ""},
      {R"({"multipleOf":1.5})", "4.5", true, "", ""},
      {R"({"multipleOf":0.5})", "1e308", true, "", ""},  // quotient overflows
      {R"({"multipleOf":0.123456789})", "1e308", false, "multipleOf", ""},
      {R"({"multipleOf":2})", "4.5", false, "multipleOf", ""},
      {R"({"multipleOf":1e-8})", "12391239123", true, "", ""},
  });
}

TEST(JsonSchemaTest, StringKeywords) {
  RunCases({
      {R"({"minLength":2})", R"("ab")", true, "", ""},
      {R"({"minLength":2})", R"("a")", false, "minLength", ""},
      // Code points, not bytes: "é" is 2 bytes, "😀" is 4 bytes.
      {R"({"maxLength":2})", R"("éé")", true, "", ""},
      {R"({"maxLength":1})", R"("😀")", true, "", ""},
      {R"({"minLength":2})", R"("😀")", false, "minLength", ""},
      // Around the byte-length shortcuts (bytes <= maxLength, bytes / 4 >= minLength).
      {R"({"minLength":1})", R"("😀")", true, "", ""},
      {R"({"minLength":2})", R"("😀😀")", true, "", ""},
      {R"({"minLength":3})", R"("😀😀")", false, "minLength", ""},
      {R"({"maxLength":3})", R"("éé")", true, "", ""},
      {R"({"maxLength":1})", R"("éé")", false, "maxLength", ""},
      {R"({"minLength":0})", R"("")", true, "", ""},
      {R"({"maxLength":0})", R"("")", true, "", ""},
      {R"({"maxLength":0})", R"("a")", false, "maxLength", ""},
      {R"({"minLength":18446744073709551615})", R"("abcd")", false, "minLength", ""},
      {R"({"maxLength":2.0})", R"("abc")", false, "maxLength", ""},
      {R"({"pattern":"^[a-z]+$"})", R"("abc")", true, "", ""},
      {R"({"pattern":"^[a-z]+$"})", R"("aBc")", false, "pattern", ""},
      {R"({"pattern":"b"})", R"("abc")", true, "", ""},  // not anchored
      {R"({"pattern":"^\\p{Letter}+$"})", R"("ÀÉ")", true, "", ""},
      {R"({"pattern":"^\\u00e9$"})", R"("é")", true, "", ""},
      {R"({"pattern":"^\\s$"})", "\"\\u00a0\"", true, "", ""},  // ECMA \s includes NBSP
      {R"({"pattern":"^.$"})", "\"\\n\"", false, "pattern", ""},
      {R"({"pattern":"x"})", "1", true, "", ""},
  });
}

TEST(JsonSchemaTest, ArrayKeywords) {
  RunCases({
      {R"({"items":{"type":"string"}})", R"(["a","b"])", true, "", ""},
      {R"({"items":{"type":"string"}})", R"(["a","b",3])", false, "type", "/2"},
      {R"({"prefixItems":[{"type":"integer"}],"items":{"type":"string"}})", R"([1,"a"])", true, "",
       ""},
      {R"({"prefixItems":[{"type":"integer"}],"items":{"type":"string"}})", R"(["a"])", false,
       "type", "/0"},
      {R"({"prefixItems":[{"type":"integer"}],"items":false})", R"([1,2])", false, "items", ""},
      {R"({"minItems":1})", "[]", false, "minItems", ""},
      {R"({"maxItems":1})", "[1,2]", false, "maxItems", ""},
      {R"({"uniqueItems":true})", "[1,2,3]", true, "", ""},
      {R"({"uniqueItems":true})", "[1,2,1.0]", false, "uniqueItems", ""},
      {R"({"uniqueItems":true})", R"([{"a":1,"b":2},{"b":2,"a":1}])", false, "uniqueItems", ""},
      {R"({"uniqueItems":false})", "[1,1]", true, "", ""},
      {R"({"contains":{"const":5}})", "[1,5]", true, "", ""},
      {R"({"contains":{"const":5}})", "[1,2]", false, "contains", ""},
      {R"({"contains":{"const":5},"minContains":2})", "[5,1,5]", true, "", ""},
      {R"({"contains":{"const":5},"minContains":2})", "[5,1]", false, "minContains", ""},
      {R"({"contains":{"const":5},"maxContains":1})", "[5,5]", false, "maxContains", ""},
      {R"({"contains":{"const":5},"minContains":0})", "[]", true, "", ""},
      {R"({"$schema":"http://json-schema.org/draft-07/schema#","items":[{"type":"integer"}],
          "additionalItems":{"type":"string"}})",
       R"([1,"a","b"])", true, "", ""},
      {R"({"$schema":"http://json-schema.org/draft-07/schema#","items":[{"type":"integer"}],
          "additionalItems":{"type":"string"}})",
       R"([1,"a",2])", false, "type", "/2"},
      {R"({"$schema":"http://json-schema.org/draft-07/schema#","items":[{"type":"integer"}],
          "additionalItems":false})",
       R"([1,2])", false, "additionalItems", ""},
      {R"({"$schema":"http://json-schema.org/draft-07/schema#","items":{"type":"integer"},
          "additionalItems":false})",
       R"([1,2])", true, "", ""},
  });
}

TEST(JsonSchemaTest, ObjectKeywords) {
  RunCases({
      {R"({"required":["id"]})", R"({"id":1})", true, "", ""},
      {R"({"required":["id"]})", R"({"ID":1})", false, "required", ""},
      {R"({"properties":{"a":{"type":"integer"}}})", R"({"a":"x"})", false, "type", "/a"},
      {R"({"properties":{"a/b~c":{"type":"integer"}}})", R"({"a/b~c":"x"})", false, "type",
       "/a~1b~0c"},
      {R"({"properties":{"a":true},"additionalProperties":false})", R"({"a":1,"b":2})", false,
       "additionalProperties", ""},
      {R"({"patternProperties":{"^x-":{"type":"string"}},"additionalProperties":false})",
       R"({"x-a":"s"})", true, "", ""},
      {R"({"patternProperties":{"^x-":{"type":"string"}},"additionalProperties":false})",
       R"({"x-a":1})", false, "type", "/x-a"},
      {R"({"additionalProperties":{"type":"integer"}})", R"({"q":1.5})", false, "type", "/q"},
      {R"({"propertyNames":{"maxLength":3}})", R"({"abc":1})", true, "", ""},
      {R"({"propertyNames":{"maxLength":3}})", R"({"abcd":1})", false, "propertyNames", ""},
      {R"({"minProperties":1})", "{}", false, "minProperties", ""},
      {R"({"maxProperties":1})", R"({"a":1,"b":2})", false, "maxProperties", ""},
      {R"({"dependentRequired":{"a":["b"]}})", R"({"a":1,"b":2})", true, "", ""},
      {R"({"dependentRequired":{"a":["b"]}})", R"({"a":1})", false, "dependentRequired", ""},
      {R"({"dependentRequired":{"a":["b"]}})", R"({"b":1})", true, "", ""},
      {R"({"dependentSchemas":{"a":{"required":["c"]}}})", R"({"a":1})", false, "required", ""},
      {R"({"$schema":"http://json-schema.org/draft-07/schema","dependencies":{"a":["b"]}})",
       R"({"a":1})", false, "dependencies", ""},
      {R"({"$schema":"http://json-schema.org/draft-07/schema","dependencies":{"a":{"maxProperties":1}}})",
       R"({"a":1,"b":2})", false, "maxProperties", ""},
      // Keys under properties / $defs / patternProperties are names, not keywords.
      {R"({"properties":{"requried":{"type":"string"},"$ref":{"type":"string"}},
          "$defs":{"unevaluatedProperties":true}})",
       R"({"requried":"x","$ref":"y"})", true, "", ""},
  });
}

TEST(JsonSchemaTest, Combinators) {
  RunCases({
      {R"({"allOf":[{"type":"integer"},{"minimum":2}]})", "3", true, "", ""},
      {R"({"allOf":[{"type":"integer"},{"minimum":2}]})", "1", false, "minimum", ""},
      {R"({"anyOf":[{"type":"string"},{"type":"null"}]})", "null", true, "", ""},
      {R"({"anyOf":[{"type":"string"},{"type":"null"}]})", "1", false, "anyOf", ""},
      {R"({"oneOf":[{"type":"integer"},{"minimum":2}]})", "1", true, "", ""},
      {R"({"oneOf":[{"type":"integer"},{"minimum":2}]})", "3", false, "oneOf", ""},
      {R"({"oneOf":[{"type":"integer"},{"minimum":2}]})", "1.5", false, "oneOf", ""},
      {R"({"not":{"type":"string"}})", "1", true, "", ""},
      {R"({"not":{"type":"string"}})", R"("s")", false, "not", ""},
      {R"({"if":{"type":"integer"},"then":{"minimum":0},"else":{"type":"string"}})", "-1", false,
       "minimum", ""},
      {R"({"if":{"type":"integer"},"then":{"minimum":0},"else":{"type":"string"}})", "true", false,
       "type", ""},
      {R"({"if":{"type":"integer"},"then":{"minimum":0},"else":{"type":"string"}})", R"("s")", true,
       "", ""},
      {R"({"then":false})", "1", true, "", ""},  // then without if has no effect
      {"true", "[1]", true, "", ""},
      {"false", "null", false, "false", ""},
      {R"({"properties":{"a":false}})", R"({"a":1})", false, "false", "/a"},
  });
}

TEST(JsonSchemaTest, RefsAndDefinitions) {
  RunCases({
      {R"({"$defs":{"pos":{"minimum":0}},"properties":{"n":{"$ref":"#/$defs/pos"}}})",
       R"({"n":-1})", false, "minimum", "/n"},
      {R"({"$defs":{"a~b":{"type":"string"},"c/d":{"type":"string"},"e%f":{"type":"string"}},
          "properties":{"x":{"$ref":"#/$defs/a~0b"},"y":{"$ref":"#/$defs/c~1d"},
                        "z":{"$ref":"#/$defs/e%25f"}}})",
       R"({"x":"1","y":"2","z":3})", false, "type", "/z"},
      {R"({"$id":"https://example.com/root.json","$defs":{"s":{"$id":"sub/s.json","type":"string"}},
          "$ref":"https://example.com/sub/s.json"})",
       "1", false, "type", ""},
      {R"({"$ref":"#num","$defs":{"n":{"$anchor":"num","type":"number"}}})", R"("x")", false,
       "type", ""},
      {R"({"$schema":"http://json-schema.org/draft-07/schema#","allOf":[{"$ref":"#num"}],
          "definitions":{"n":{"$id":"#num","type":"number"}}})",
       R"("x")", false, "type", ""},
      // 2020-12: $ref siblings apply.
      {R"({"$defs":{"a":{"type":"array"}},"properties":{"f":{"$ref":"#/$defs/a","maxItems":1}}})",
       R"({"f":[1,2]})", false, "maxItems", "/f"},
      // draft-07: $ref siblings are ignored.
      {R"({"$schema":"http://json-schema.org/draft-07/schema#","definitions":{"a":{"type":"array"}},
          "properties":{"f":{"$ref":"#/definitions/a","maxItems":1}}})",
       R"({"f":[1,2]})", true, "", ""},
      {R"({"$ref":"#/$defs/t","$defs":{"t":true}})", "1", true, "", ""},
  });
}

TEST(JsonSchemaTest, RecursiveSchema) {
  auto schema = MustCompile(R"({
    "$defs": {"node": {"type": "object", "required": ["value"],
                       "properties": {"value": {"type": "integer"},
                                      "children": {"type": "array",
                                                   "items": {"$ref": "#/$defs/node"}}}}},
    "$ref": "#/$defs/node"})");
  ASSERT_NE(schema, nullptr);
  EXPECT_TRUE(
      Check(*schema, R"({"value":1,"children":[{"value":2,"children":[{"value":3}]}]})").valid);
  Outcome out =
      Check(*schema, R"({"value":1,"children":[{"value":2,"children":[{"value":"x"}]}]})");
  EXPECT_FALSE(out.valid);
  EXPECT_EQ(out.violation.pointer, "/children/0/children/0/value");
  EXPECT_EQ(out.violation.keyword, "type");
  EXPECT_EQ(out.violation.message,
            "/children/0/children/0/value: type integer expected, got string");
}

TEST(JsonSchemaTest, ErrorMessages) {
  struct MessageCase {
    const char* schema;
    const char* instance;
    const char* message;
  };
  const MessageCase cases[] = {
      {R"({"properties":{"amount":{"minimum":0}}})", R"({"amount":-3})",
       "/amount: minimum 0, got -3"},
      {R"({"properties":{"email":{"format":"email"}}})", R"({"email":"x@"})",
       R"(/email: format "email" expected, got "x@")"},
      {R"({"required":["id"]})", "{}", R"(/: required property "id" is missing)"},
      {R"({"properties":{"tags":{"items":{"type":"string"}}}})", R"({"tags":["a","b",3]})",
       "/tags/2: type string expected, got number"},
      {R"({"additionalProperties":false})", R"({"x":1})",
       R"(/: additionalProperties: property "x" is not allowed)"},
      {R"({"enum":["a","b"]})", R"("c")", R"(/: enum ["a","b"] expected, got "c")"},
      {R"({"maxLength":2})", R"("abc")", "/: maxLength 2, got 3 characters"},
      {R"({"uniqueItems":true})", "[1,2,1]", "/: uniqueItems expected, items 0 and 2 are equal"},
      {R"({"dependentRequired":{"a":["b"]}})", R"({"a":1})",
       R"(/: dependentRequired: property "b" is required when "a" is present)"},
      {R"({"anyOf":[{"type":"string"},{"type":"null"}]})", "1",
       "/: anyOf: value matches none of the 2 schemas (first: /: type string expected, got "
       "number)"},
      {R"({"oneOf":[{"minimum":1},{"minimum":2}]})", "3",
       "/: oneOf: value matches schemas 0 and 1, exactly one expected"},
      {R"({"propertyNames":{"pattern":"^[a-z]+$"}})", R"({"Ab":1})",
       R"(/: propertyNames: name "Ab" is invalid (/: pattern "^[a-z]+$" expected, got "Ab"))"},
  };
  for (const MessageCase& c : cases) {
    auto schema = MustCompile(c.schema);
    ASSERT_NE(schema, nullptr);
    Outcome out = Check(*schema, c.instance);
    EXPECT_FALSE(out.valid);
    EXPECT_EQ(out.violation.message, c.message) << c.schema;
  }
}

TEST(JsonSchemaTest, LongValuesAreTruncatedInMessages) {
  auto schema = MustCompile(R"({"const":"a"})");
  ASSERT_NE(schema, nullptr);
  std::string long_string(10000, 'z');
  Outcome out = Check(*schema, "\"" + long_string + "\"");
  EXPECT_FALSE(out.valid);
  EXPECT_LT(out.violation.message.size(), 120u) << out.violation.message;
  EXPECT_NE(out.violation.message.find("..."), std::string::npos);
}

TEST(JsonSchemaTest, FormatAssertionsCanBeTurnedOff) {
  const char* schema_json = R"({"format":"date-time"})";
  auto asserting = MustCompile(schema_json);
  JsonSchemaOptions annotations_only;
  annotations_only.format_assertions = false;
  auto annotating = MustCompile(schema_json, annotations_only);
  ASSERT_NE(asserting, nullptr);
  ASSERT_NE(annotating, nullptr);
  EXPECT_TRUE(Check(*asserting, R"("2024-02-29T12:00:00Z")").valid);
  Outcome bad = Check(*asserting, R"("2023-02-29T12:00:00Z")");
  EXPECT_FALSE(bad.valid);
  EXPECT_EQ(bad.violation.keyword, "format");
  EXPECT_TRUE(Check(*annotating, R"("2023-02-29T12:00:00Z")").valid);
  // Unknown formats are annotations and never fail.
  auto unknown = MustCompile(R"({"format":"credit-card"})");
  ASSERT_NE(unknown, nullptr);
  EXPECT_TRUE(Check(*unknown, R"("anything")").valid);
}

TEST(JsonSchemaTest, FormatCheckers) {
  EXPECT_TRUE(IsValidDateTimeFormat("1963-06-19T08:30:06.283185Z"));
  EXPECT_TRUE(IsValidDateTimeFormat("1998-12-31T15:59:60.123-08:00"));
  EXPECT_FALSE(IsValidDateTimeFormat("1998-12-31T22:59:60Z"));
  EXPECT_FALSE(IsValidDateTimeFormat("1963-06-19 08:30:06Z"));
  EXPECT_TRUE(IsValidDateFormat("2020-02-29"));
  EXPECT_FALSE(IsValidDateFormat("2100-02-29"));
  EXPECT_TRUE(IsValidTimeFormat("23:59:60+00:00"));
  EXPECT_FALSE(IsValidTimeFormat("12:00:00"));
  EXPECT_TRUE(IsValidEmailFormat("joe.bloggs@example.com"));
  EXPECT_TRUE(IsValidEmailFormat("\"joe bloggs\"@example.com"));
  EXPECT_TRUE(IsValidEmailFormat("a@[IPv6:::1]"));
  EXPECT_FALSE(IsValidEmailFormat("te..st@example.com"));
  EXPECT_FALSE(IsValidEmailFormat("x@"));
  EXPECT_TRUE(IsValidUuidFormat("2eb8aa08-AA98-11ea-B4Aa-73B441D16380"));
  EXPECT_FALSE(IsValidUuidFormat("2eb8aa08aa9811eab4aa73b441d16380"));
  EXPECT_TRUE(IsValidIpv4Format("192.168.0.1"));
  EXPECT_FALSE(IsValidIpv4Format("192.168.0.01"));
  EXPECT_TRUE(IsValidIpv6Format("1::d6:192.168.0.1"));
  EXPECT_FALSE(IsValidIpv6Format("1::d6::42"));
  EXPECT_TRUE(IsValidUriFormat("http://foo.bar/?baz=qux#quux"));
  EXPECT_TRUE(IsValidUriFormat("urn:oasis:names:specification:docbook:dtd:xml:4.1.2"));
  EXPECT_FALSE(IsValidUriFormat("/abc"));
  EXPECT_FALSE(IsValidUriFormat("http://example.com/%6G"));
  EXPECT_EQ(FindJsonSchemaFormatChecker("hostname"), nullptr);
  EXPECT_NE(FindJsonSchemaFormatChecker("ipv6"), nullptr);
}

TEST(JsonSchemaTest, DraftSelection) {
  auto d2020 = MustCompile(R"({"$schema":"https://json-schema.org/draft/2020-12/schema#"})");
  auto d2020_default = MustCompile(R"({"type":"string"})");
  auto d7 = MustCompile(R"({"$schema":"http://json-schema.org/draft-07/schema#"})");
  auto d7_no_hash = MustCompile(R"({"$schema":"http://json-schema.org/draft-07/schema"})");
  ASSERT_TRUE(d2020 && d2020_default && d7 && d7_no_hash);
  EXPECT_EQ(d2020->draft(), JsonSchema::Draft::k202012);
  EXPECT_EQ(d2020_default->draft(), JsonSchema::Draft::k202012);
  EXPECT_EQ(d7->draft(), JsonSchema::Draft::k7);
  EXPECT_EQ(d7_no_hash->draft(), JsonSchema::Draft::k7);
  EXPECT_NE(CompileError(R"({"$schema":"http://json-schema.org/draft-04/schema#"})")
                .find("unsupported $schema"),
            std::string::npos);
  EXPECT_NE(CompileError(R"({"$schema":5})").find("$schema"), std::string::npos);
  // Draft-specific keywords.
  EXPECT_NE(CompileError(R"({"$schema":"http://json-schema.org/draft-07/schema#",
                             "prefixItems":[true]})")
                .find(R"(unsupported keyword "prefixItems")"),
            std::string::npos);
  EXPECT_NE(CompileError(R"({"dependencies":{"a":["b"]}})").find("unsupported keyword"),
            std::string::npos);
  EXPECT_NE(CompileError(R"({"items":[true]})").find("prefixItems"), std::string::npos);
}

TEST(JsonSchemaTest, RefusesUnsupportedKeywords) {
  EXPECT_EQ(CompileError(R"({"properties":{"a":{"unevaluatedProperties":false}}})"),
            R"(json schema: unsupported keyword "unevaluatedProperties" at /properties/a)");
  EXPECT_EQ(CompileError(R"({"requried":["a"]})"),
            R"(json schema: unsupported keyword "requried" at /)");
  for (const char* keyword :
       {"unevaluatedItems", "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor"}) {
    std::string schema = std::string(R"({"$defs":{"x":{")") + keyword + R"(":"#"}}})";
    EXPECT_NE(CompileError(schema).find("unsupported keyword"), std::string::npos) << keyword;
  }
  // Inside allOf / items / not / if: still schema positions.
  EXPECT_NE(
      CompileError(R"({"allOf":[{"items":{"not":{"foo":1}}}]})").find("at /allOf/0/items/not"),
      std::string::npos);
  // $vocabulary requiring an unsupported vocabulary.
  EXPECT_NE(CompileError(R"({"$vocabulary":{
                "https://json-schema.org/draft/2020-12/vocab/unevaluated":true}})")
                .find("unsupported vocabulary"),
            std::string::npos);
  EXPECT_EQ(CompileError(R"({"$vocabulary":{
                "https://json-schema.org/draft/2020-12/vocab/core":true,
                "https://example.com/vocab/optional":false}})"),
            "<compiled>");
  // Annotation keywords are accepted.
  EXPECT_EQ(CompileError(R"({"title":"t","description":"d","default":{"x":1},"examples":[1],
                             "$comment":"c","deprecated":true,"readOnly":false,"writeOnly":false,
                             "contentMediaType":"application/json","contentEncoding":"base64",
                             "contentSchema":{"type":"object"}})"),
            "<compiled>");
}

TEST(JsonSchemaTest, RefusesMalformedSchemas) {
  std::string parse_error = CompileError(R"({"type": "string",})");
  EXPECT_NE(parse_error.find("not valid JSON at offset 18"), std::string::npos) << parse_error;
  EXPECT_NE(CompileError("").find("not valid JSON at offset 0"), std::string::npos);
  EXPECT_NE(CompileError("[1]").find("must be an object or a boolean"), std::string::npos);
  EXPECT_NE(CompileError(R"({"properties":{"a":3}})").find("at /properties/a must be an object"),
            std::string::npos);
  EXPECT_NE(CompileError(R"({"type":"strnig"})").find(R"(keyword "type" at /)"), std::string::npos);
  EXPECT_NE(CompileError(R"({"type":["string","string"]})").find("type"), std::string::npos);
  EXPECT_NE(CompileError(R"({"minLength":-1})").find("non-negative integer"), std::string::npos);
  EXPECT_NE(CompileError(R"({"minLength":1.5})").find("non-negative integer"), std::string::npos);
  EXPECT_NE(CompileError(R"({"multipleOf":0})").find("greater than 0"), std::string::npos);
  EXPECT_NE(CompileError(R"({"required":"id"})").find("array of strings"), std::string::npos);
  EXPECT_NE(CompileError(R"({"allOf":[]})").find("non-empty array"), std::string::npos);
  EXPECT_NE(CompileError(R"({"enum":1})").find("an array"), std::string::npos);
  EXPECT_NE(CompileError(R"({"$id":"http://x/#frag"})").find("fragment"), std::string::npos);
  EXPECT_NE(CompileError(R"({"$anchor":"1bad"})").find("$anchor"), std::string::npos);
  EXPECT_NE(CompileError(R"({"$defs":{"a":{"$id":"http://x/a"},"b":{"$id":"http://x/a"}}})")
                .find("duplicate $id"),
            std::string::npos);
}

TEST(JsonSchemaTest, RefusesBadRegex) {
  std::string lookahead = CompileError(R"({"pattern":"^(?=a)b"})");
  EXPECT_NE(lookahead.find(R"(invalid regular expression "^(?=a)b" for "pattern" at /)"),
            std::string::npos)
      << lookahead;
  EXPECT_NE(CompileError(R"({"properties":{"p":{"pattern":"(a"}}})").find("at /properties/p"),
            std::string::npos);
  EXPECT_NE(
      CompileError(R"json({"patternProperties":{"(\\1)":true}})json").find("patternProperties"),
      std::string::npos);
  EXPECT_NE(CompileError(R"json({"pattern":"(a)\\1"})json").find("invalid regular expression"),
            std::string::npos);
}

TEST(JsonSchemaTest, RefusesDanglingAndRemoteRefs) {
  EXPECT_NE(CompileError(R"({"$ref":"#/$defs/missing"})").find("does not resolve"),
            std::string::npos);
  EXPECT_NE(CompileError(R"({"$ref":"#missing"})").find("anchor \"missing\" not found"),
            std::string::npos);
  EXPECT_NE(CompileError(R"({"properties":{"a":{"$ref":"other.json"}}})")
                .find("remote references are not supported"),
            std::string::npos);
  EXPECT_NE(CompileError(R"({"$ref":"https://json-schema.org/draft/2020-12/schema"})")
                .find("remote references are not supported"),
            std::string::npos);
  EXPECT_NE(CompileError(R"({"$ref":"#/$defs/%zz"})").find("invalid JSON pointer"),
            std::string::npos);
  EXPECT_NE(CompileError(R"({"$ref":"#/enum/0","enum":[1]})").find("not a schema"),
            std::string::npos);
  EXPECT_NE(CompileError(R"({"$ref":5})").find("$ref"), std::string::npos);
  // A reference loop that never consumes the instance would never terminate.
  EXPECT_NE(CompileError(R"({"$ref":"#"})").find("reference cycle"), std::string::npos);
  EXPECT_NE(CompileError(R"({"$defs":{"a":{"allOf":[{"$ref":"#/$defs/b"}]},
                                      "b":{"anyOf":[{"$ref":"#/$defs/a"}]}}})")
                .find("reference cycle"),
            std::string::npos);
  // ...but recursion through properties / items is fine.
  EXPECT_EQ(CompileError(R"({"properties":{"next":{"$ref":"#"}}})"), "<compiled>");
}

TEST(JsonSchemaTest, DeepInstanceNestingIsAViolationNotACrash) {
  auto schema = MustCompile(R"({"type":"array","items":{"$ref":"#"}})");
  ASSERT_NE(schema, nullptr);
  const int depth = 100000;
  std::string deep(depth, '[');
  deep += std::string(depth, ']');
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(deep.c_str(), deep.size());
  ASSERT_FALSE(doc.HasParseError());
  SchemaViolation violation;
  EXPECT_FALSE(schema->Validate(doc, &violation));
  EXPECT_EQ(violation.keyword, "depth");
  EXPECT_NE(violation.message.find("nesting too deep"), std::string::npos);
  EXPECT_FALSE(schema->Validate(doc, nullptr));

  // Within the limit it validates normally.
  std::string ok(100, '[');
  ok += std::string(100, ']');
  EXPECT_TRUE(Check(*schema, ok).valid);

  // Keywords comparing whole values (uniqueItems, const) do not recurse on the instance.
  rapidjson::Document pair;
  std::string two = "[" + deep + "," + deep + "]";
  pair.Parse<rapidjson::kParseIterativeFlag>(two.c_str(), two.size());
  ASSERT_FALSE(pair.HasParseError());
  auto unique = MustCompile(R"({"uniqueItems":true})");
  ASSERT_NE(unique, nullptr);
  EXPECT_FALSE(unique->Validate(pair, &violation));
  EXPECT_EQ(violation.keyword, "uniqueItems");
  auto constant = MustCompile(R"({"const":[[[1]],[[1]]]})");
  ASSERT_NE(constant, nullptr);
  EXPECT_FALSE(constant->Validate(pair, &violation));
  EXPECT_EQ(violation.keyword, "const");
  EXPECT_LT(violation.message.size(), 200u);
}

TEST(JsonSchemaTest, LongReferenceChainsAreBounded) {
  // 5000 definitions, each referring to the next: no cycle, but deeper than the evaluation limit.
  std::string schema = R"({"$ref":"#/$defs/d0","$defs":{)";
  const int n = 5000;
  for (int i = 0; i < n; ++i) {
    schema += "\"d" + std::to_string(i) + "\":";
    schema += i + 1 < n ? R"({"$ref":"#/$defs/d)" + std::to_string(i + 1) + "\"}" : "true";
    schema += i + 1 < n ? "," : "";
  }
  schema += "}}";
  auto compiled = MustCompile(schema);
  ASSERT_NE(compiled, nullptr);
  Outcome out = Check(*compiled, "1");
  EXPECT_FALSE(out.valid);
  EXPECT_EQ(out.violation.keyword, "depth");
}

TEST(JsonSchemaTest, DeepSchemaDocumentIsRefused) {
  std::string schema;
  for (int i = 0; i < 2000; ++i) schema += R"({"not":)";
  schema += "true";
  schema += std::string(2000, '}');
  EXPECT_NE(CompileError(schema).find("nested deeper than"), std::string::npos);
}

TEST(JsonSchemaTest, CompileFromValueOwnsItsCopy) {
  std::shared_ptr<const JsonSchema> schema;
  {
    std::string pattern = "^ab+$";
    std::string name = "p";
    rapidjson::Document doc;
    doc.SetObject();
    rapidjson::Value props(rapidjson::kObjectType);
    rapidjson::Value p(rapidjson::kObjectType);
    // Constant-string references into buffers that die with this scope.
    p.AddMember("pattern", rapidjson::StringRef(pattern.c_str()), doc.GetAllocator());
    p.AddMember("enum", rapidjson::Value(rapidjson::kArrayType), doc.GetAllocator());
    p["enum"].PushBack(rapidjson::StringRef(pattern.c_str()), doc.GetAllocator());
    p["enum"].PushBack(rapidjson::StringRef("abb"), doc.GetAllocator());
    props.AddMember(rapidjson::StringRef(name.c_str()), p, doc.GetAllocator());
    doc.AddMember("properties", props, doc.GetAllocator());
    auto compiled = JsonSchema::Compile(doc);
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    schema = *compiled;
    pattern.assign(pattern.size(), 'X');
    name.assign(name.size(), 'X');
  }
  EXPECT_TRUE(Check(*schema, R"({"p":"abb"})").valid);
  Outcome out = Check(*schema, R"({"p":"abc"})");
  EXPECT_FALSE(out.valid);
  EXPECT_EQ(out.violation.pointer, "/p");
}

TEST(JsonSchemaTest, ConcurrentValidation) {
  auto schema = MustCompile(R"({"type":"object","required":["id"],
      "properties":{"id":{"type":"integer","minimum":1},"tags":{"type":"array",
      "items":{"type":"string","pattern":"^[a-z]+$"},"uniqueItems":true}}})");
  ASSERT_NE(schema, nullptr);
  rapidjson::Document good = Parse(R"({"id":5,"tags":["a","b"]})");
  rapidjson::Document bad = Parse(R"({"id":5,"tags":["a","B"]})");
  std::vector<std::thread> threads;
  std::vector<int> errors(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        SchemaViolation v;
        if (!schema->Validate(good, &v)) ++errors[t];
        if (schema->Validate(bad, &v) || v.pointer != "/tags/1") ++errors[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int e : errors) EXPECT_EQ(e, 0);
}

}  // namespace
}  // namespace wharf::pipeline::contract
