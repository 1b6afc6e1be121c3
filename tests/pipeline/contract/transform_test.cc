#include "pipeline/contract/transform.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/contract/hmac.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "wharf/v1/contract.pb.h"

namespace wharf::pipeline::contract {
namespace {

using Result = TransformChain::Result;

constexpr char kKey[] = "test-hash-key";

// Steps in protobuf text format: `transforms { op: "drop" paths: "/a" }`.
google::protobuf::RepeatedPtrField<wharf::v1::TransformSpec> Steps(const std::string& text) {
  wharf::v1::ContractSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec.transforms();
}

std::shared_ptr<const TransformChain> MustCompile(const std::string& text, std::string key = kKey) {
  absl::StatusOr<std::shared_ptr<const TransformChain>> chain =
      TransformChain::Compile(Steps(text), std::move(key));
  EXPECT_TRUE(chain.ok()) << chain.status();
  return chain.ok() ? *chain : nullptr;
}

std::string CompileError(const std::string& text, std::string key = kKey) {
  absl::StatusOr<std::shared_ptr<const TransformChain>> chain =
      TransformChain::Compile(Steps(text), std::move(key));
  if (chain.ok()) return "compiled";
  EXPECT_EQ(chain.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(chain.status().message());
}

std::string ToJson(const rapidjson::Value& v) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  v.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

struct Outcome {
  Result result = Result::kKeep;
  std::string json;  // the record after Apply
  TransformFailure failure;
};

Outcome RunChain(const TransformChain& chain, const std::string& json,
                 const RecordMetadata& meta = RecordMetadata{}) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());
  EXPECT_FALSE(doc.HasParseError()) << json;
  Outcome out;
  out.result = chain.Apply(&doc, meta, &out.failure);
  out.json = ToJson(doc);
  return out;
}

// Compiles `steps`, applies them to `json`, expects kKeep and returns the resulting JSON.
std::string Transform(const std::string& steps, const std::string& json) {
  std::shared_ptr<const TransformChain> chain = MustCompile(steps);
  if (chain == nullptr) return "compile failed";
  Outcome out = RunChain(*chain, json);
  EXPECT_EQ(out.result, Result::kKeep) << out.failure.message;
  return out.json;
}

// Compiles `steps`, applies them to `json`, expects kFailed and returns the failure message.
std::string Failure(const std::string& steps, const std::string& json) {
  std::shared_ptr<const TransformChain> chain = MustCompile(steps);
  if (chain == nullptr) return "compile failed";
  Outcome out = RunChain(*chain, json);
  EXPECT_EQ(out.result, Result::kFailed) << out.json;
  return out.failure.message;
}

TEST(TransformTest, EmptyChainKeepsTheRecord) {
  std::shared_ptr<const TransformChain> chain = MustCompile("");
  ASSERT_NE(chain, nullptr);
  EXPECT_TRUE(chain->empty());
  EXPECT_EQ(RunChain(*chain, R"({"a":1})").json, R"({"a":1})");
  EXPECT_FALSE(MustCompile(R"(transforms { op: "drop" paths: "/a" })")->empty());
}

TEST(TransformTest, Rename) {
  const std::string step = R"(transforms { op: "rename" path: "/old" to: "/new" })";
  EXPECT_EQ(Transform(step, R"({"old":1,"b":2})"), R"({"b":2,"new":1})");
  EXPECT_EQ(Transform(step, R"({"b":2})"), R"({"b":2})");  // missing source: no-op
  EXPECT_EQ(Transform(step, R"({"old":null})"), R"({"new":null})");
  // Target parents are created; the target is replaced when it exists.
  EXPECT_EQ(Transform(R"(transforms { op: "rename" path: "/a/b" to: "/x/y/z" })",
                      R"({"a":{"b":[1,2],"c":3}})"),
            R"({"a":{"c":3},"x":{"y":{"z":[1,2]}}})");
  EXPECT_EQ(Transform(step, R"({"old":1,"new":2})"), R"({"new":1})");
  // Escaped pointer tokens: "a/b" and "m~n".
  EXPECT_EQ(
      Transform(R"(transforms { op: "rename" path: "/a~1b" to: "/m~0n" })", R"({"a/b":true})"),
      R"({"m~n":true})");
  // Writing through a scalar fails instead of clobbering it.
  EXPECT_EQ(
      Failure(R"(transforms { op: "rename" path: "/old" to: "/s/t" })", R"({"old":1,"s":"text"})"),
      "step 1 (rename /old): cannot write /s/t: /s is string, not an object");
}

TEST(TransformTest, Drop) {
  const std::string step = R"(transforms { op: "drop" paths: "/a" paths: "/n/x" paths: "/z" })";
  EXPECT_EQ(Transform(step, R"({"a":1,"b":2,"n":{"x":1,"y":2}})"), R"({"b":2,"n":{"y":2}})");
  EXPECT_EQ(Transform(step, R"({"b":2})"), R"({"b":2})");
  EXPECT_EQ(Transform(R"(transforms { op: "drop" paths: "/arr/1" })", R"({"arr":[1,2,3]})"),
            R"({"arr":[1,3]})");
}

TEST(TransformTest, Keep) {
  const std::string step =
      R"(transforms { op: "keep" paths: "/id" paths: "/customer/email" paths: "/gone" })";
  EXPECT_EQ(Transform(step, R"({"id":7,"secret":"s","customer":{"email":"e","ssn":"1"}})"),
            R"({"id":7,"customer":{"email":"e"}})");
  // Overlapping pointers: the wider one wins.
  EXPECT_EQ(Transform(R"(transforms { op: "keep" paths: "/c/a" paths: "/c" })",
                      R"({"c":{"a":1,"b":2},"d":3})"),
            R"({"c":{"a":1,"b":2}})");
  // A pointer into an array keeps the whole array.
  EXPECT_EQ(Transform(R"(transforms { op: "keep" paths: "/items/0/sku" })",
                      R"({"items":[{"sku":1,"p":2}],"x":1})"),
            R"({"items":[{"sku":1,"p":2}]})");
  // Nothing matches: an empty object.
  EXPECT_EQ(Transform(step, R"({"other":1,"customer":"not an object"})"), R"({})");
}

TEST(TransformTest, SetConstantAndExpression) {
  EXPECT_EQ(
      Transform(R"(transforms { op: "set" path: "/meta/src" value_json: "{\"k\": [1, \"x\"]}" })",
                R"({"a":1})"),
      R"({"a":1,"meta":{"src":{"k":[1,"x"]}}})");
  EXPECT_EQ(Transform(R"(transforms { op: "set" path: "/a" value_json: "null" })", R"({"a":1})"),
            R"({"a":null})");
  EXPECT_EQ(Transform(R"(transforms { op: "set" path: "/total" expr: "price * qty" })",
                      R"({"price":2.5,"qty":4})"),
            R"({"price":2.5,"qty":4,"total":10})");
  EXPECT_EQ(
      Transform(
          R"pb(transforms { op: "set" path: "/label" expr: "upper(c) + '-' + to_string(n)" })pb",
          R"({"c":"de","n":5})"),
      R"({"c":"de","n":5,"label":"DE-5"})");
  // The expression sees the record as it is at that step; copying an object is a deep copy.
  EXPECT_EQ(Transform(R"(transforms { op: "set" path: "/copy" expr: "src" }
                          transforms { op: "set" path: "/src/v" value_json: "2" })",
                      R"({"src":{"v":1}})"),
            R"({"src":{"v":2},"copy":{"v":1}})");
  // Replacing a value with (part of) itself.
  EXPECT_EQ(Transform(R"(transforms { op: "set" path: "/a" expr: "a.b" })", R"({"a":{"b":[1]}})"),
            R"({"a":[1]})");
  EXPECT_EQ(Transform(R"(transforms { op: "set" path: "/x" expr: "missing" })", R"({})"),
            R"({"x":null})");
  // Array elements: existing index, or "-" to append.
  EXPECT_EQ(Transform(R"(transforms { op: "set" path: "/arr/1" value_json: "9" }
                          transforms { op: "set" path: "/arr/-" value_json: "10" })",
                      R"({"arr":[1,2]})"),
            R"({"arr":[1,9,10]})");
  EXPECT_EQ(
      Failure(R"(transforms { op: "set" path: "/arr/5" value_json: "9" })", R"({"arr":[1,2]})"),
      "step 1 (set /arr/5): cannot write /arr/5: the array at /arr has no element \"5\"");
  EXPECT_EQ(Failure(R"(transforms { op: "set" path: "/n/x" value_json: "1" })", R"({"n":null})"),
            "step 1 (set /n/x): cannot write /n/x: /n is null, not an object");
  // Runtime errors of the expression fail the record.
  Outcome out = RunChain(*MustCompile(R"(transforms { op: "set" path: "/t" expr: "p * q" })"),
                         R"({"p":"x","q":2})");
  EXPECT_EQ(out.result, Result::kFailed);
  EXPECT_EQ(out.failure.step, 1u);
  EXPECT_EQ(out.failure.op, "set");
  EXPECT_EQ(out.failure.path, "/t");
  EXPECT_EQ(out.failure.message,
            "step 1 (set /t): operator '*' expects two numbers, got string and number "
            "(position 3)");
}

TEST(TransformTest, Default) {
  const std::string step = R"(transforms { op: "default" path: "/cur" value_json: "\"EUR\"" })";
  EXPECT_EQ(Transform(step, R"({})"), R"({"cur":"EUR"})");
  EXPECT_EQ(Transform(step, R"({"cur":null})"), R"({"cur":"EUR"})");
  EXPECT_EQ(Transform(step, R"({"cur":"USD"})"), R"({"cur":"USD"})");
  EXPECT_EQ(Transform(step, R"({"cur":""})"), R"({"cur":""})");
  EXPECT_EQ(Transform(R"(transforms { op: "default" path: "/a/b" value_json: "[]" })", R"({})"),
            R"({"a":{"b":[]}})");
}

TEST(TransformTest, CastToInt) {
  const std::string step = R"(transforms { op: "cast" path: "/amount" type: "int" })";
  EXPECT_EQ(Transform(step, R"({"amount":"12"})"), R"({"amount":12})");
  EXPECT_EQ(Transform(step, R"({"amount":"-40"})"), R"({"amount":-40})");
  EXPECT_EQ(Transform(step, R"({"amount":12.0})"), R"({"amount":12})");
  EXPECT_EQ(Transform(step, R"({"amount":7})"), R"({"amount":7})");
  EXPECT_EQ(Transform(step, R"({"amount":true})"), R"({"amount":1})");
  EXPECT_EQ(Transform(step, R"({"amount":null})"), R"({"amount":null})");
  EXPECT_EQ(Transform(step, R"({"other":1})"), R"({"other":1})");
  EXPECT_EQ(Failure(step, R"({"amount":"abc"})"),
            "step 1 (cast /amount): cannot cast \"abc\" to int");
  EXPECT_EQ(Failure(step, R"({"amount":"12.5"})"),
            "step 1 (cast /amount): cannot cast \"12.5\" to int");
  EXPECT_EQ(Failure(step, R"({"amount":"12abc"})"),
            "step 1 (cast /amount): cannot cast \"12abc\" to int");
  EXPECT_EQ(Failure(step, R"({"amount":" 12"})"),
            "step 1 (cast /amount): cannot cast \" 12\" to int");
  EXPECT_EQ(Failure(step, R"({"amount":"99999999999999999999"})"),
            "step 1 (cast /amount): cannot cast \"99999999999999999999\" to int");
  EXPECT_EQ(Failure(step, R"({"amount":""})"), "step 1 (cast /amount): cannot cast \"\" to int");
  EXPECT_EQ(Failure(step, R"({"amount":12.5})"), "step 1 (cast /amount): cannot cast 12.5 to int");
  EXPECT_EQ(Failure(step, R"({"amount":1e300})"),
            "step 1 (cast /amount): cannot cast 1e300 to int");
  EXPECT_EQ(Failure(step, R"({"amount":{"v":1}})"),
            "step 1 (cast /amount): cannot cast {\"v\":1} to int");
  // Long values are shortened in the message.
  const std::string long_value(200, 'x');
  EXPECT_EQ(Failure(step, "{\"amount\":\"" + long_value + "\"}"),
            "step 1 (cast /amount): cannot cast \"" + std::string(63, 'x') + "... to int");
}

TEST(TransformTest, CastToFloatStringBool) {
  const std::string to_float = R"(transforms { op: "cast" path: "/v" type: "float" })";
  EXPECT_EQ(Transform(to_float, R"({"v":"12.5"})"), R"({"v":12.5})");
  EXPECT_EQ(Transform(to_float, R"({"v":"-1e3"})"), R"({"v":-1000.0})");
  EXPECT_EQ(Transform(to_float, R"({"v":3})"), R"({"v":3.0})");
  EXPECT_EQ(Transform(to_float, R"({"v":false})"), R"({"v":0.0})");
  EXPECT_EQ(Failure(to_float, R"({"v":"nan"})"), "step 1 (cast /v): cannot cast \"nan\" to float");
  EXPECT_EQ(Failure(to_float, R"({"v":"1.5x"})"),
            "step 1 (cast /v): cannot cast \"1.5x\" to float");
  EXPECT_EQ(Failure(to_float, R"({"v":[1]})"), "step 1 (cast /v): cannot cast [1] to float");

  const std::string to_string = R"(transforms { op: "cast" path: "/v" type: "string" })";
  EXPECT_EQ(Transform(to_string, R"({"v":12})"), R"({"v":"12"})");
  EXPECT_EQ(Transform(to_string, R"({"v":1.5})"), R"({"v":"1.5"})");
  EXPECT_EQ(Transform(to_string, R"({"v":true})"), R"({"v":"true"})");
  EXPECT_EQ(Transform(to_string, R"({"v":"s"})"), R"({"v":"s"})");
  EXPECT_EQ(Transform(to_string, R"({"v":{"a":[1,"b"]}})"), R"({"v":"{\"a\":[1,\"b\"]}"})");

  const std::string to_bool = R"(transforms { op: "cast" path: "/v" type: "bool" })";
  EXPECT_EQ(Transform(to_bool, R"({"v":"true"})"), R"({"v":true})");
  EXPECT_EQ(Transform(to_bool, R"({"v":"false"})"), R"({"v":false})");
  EXPECT_EQ(Transform(to_bool, R"({"v":1})"), R"({"v":true})");
  EXPECT_EQ(Transform(to_bool, R"({"v":0})"), R"({"v":false})");
  EXPECT_EQ(Transform(to_bool, R"({"v":true})"), R"({"v":true})");
  EXPECT_EQ(Failure(to_bool, R"({"v":2})"), "step 1 (cast /v): cannot cast 2 to bool");
  EXPECT_EQ(Failure(to_bool, R"({"v":"yes"})"), "step 1 (cast /v): cannot cast \"yes\" to bool");
  EXPECT_EQ(Failure(to_bool, R"({"v":"TRUE"})"), "step 1 (cast /v): cannot cast \"TRUE\" to bool");
}

TEST(TransformTest, CastToTimestamp) {
  const std::string rfc = R"(transforms { op: "cast" path: "/t" type: "timestamp" })";
  EXPECT_EQ(Transform(rfc, R"({"t":"2024-05-01T14:00:00+02:00"})"),
            R"({"t":"2024-05-01T12:00:00.000Z"})");
  EXPECT_EQ(Transform(rfc, R"({"t":"2024-05-01t12:00:00.123456z"})"),
            R"({"t":"2024-05-01T12:00:00.123Z"})");
  EXPECT_EQ(Transform(rfc, R"({"t":"2024-05-01 00:30:00.5-01:30"})"),
            R"({"t":"2024-05-01T02:00:00.500Z"})");
  EXPECT_EQ(Transform(rfc, R"({"t":1714564800000})"), R"({"t":"2024-05-01T12:00:00.000Z"})");
  EXPECT_EQ(Transform(rfc, R"({"t":-1})"), R"({"t":"1969-12-31T23:59:59.999Z"})");
  EXPECT_EQ(Failure(rfc, R"({"t":"2024-05-01T12:00:00"})"),
            "step 1 (cast /t): cannot cast \"2024-05-01T12:00:00\" to timestamp (formats: "
            "rfc3339): not an RFC 3339 timestamp");
  EXPECT_EQ(Failure(rfc, R"({"t":"2023-02-29T12:00:00Z"})"),
            "step 1 (cast /t): cannot cast \"2023-02-29T12:00:00Z\" to timestamp (formats: "
            "rfc3339): date or time field out of range");
  EXPECT_EQ(Failure(rfc, R"({"t":true})"),
            "step 1 (cast /t): cannot cast true to timestamp (formats: rfc3339): a timestamp "
            "must be a string or a number");

  const std::string formats = R"(transforms { op: "cast" path: "/t" type: "timestamp"
      input_formats: "%Y-%m-%d %H:%M:%S" input_formats: "%d/%b/%Y:%T %z"
      input_formats: "epoch_seconds" input_formats: "rfc3339" })";
  EXPECT_EQ(Transform(formats, R"({"t":"2024-05-01 12:00:00"})"),
            R"({"t":"2024-05-01T12:00:00.000Z"})");
  EXPECT_EQ(Transform(formats, R"({"t":"01/May/2024:14:00:00 +0200"})"),
            R"({"t":"2024-05-01T12:00:00.000Z"})");
  EXPECT_EQ(Transform(formats, R"({"t":"1714564800.25"})"), R"({"t":"2024-05-01T12:00:00.250Z"})");
  EXPECT_EQ(Transform(formats, R"({"t":1714564800})"), R"({"t":"2024-05-01T12:00:00.000Z"})");
  EXPECT_EQ(Transform(formats, R"({"t":"2024-05-01T12:00:00Z"})"),
            R"({"t":"2024-05-01T12:00:00.000Z"})");
  EXPECT_EQ(Failure(formats, R"({"t":"2024-05-01 12:00"})"),
            "step 1 (cast /t): cannot cast \"2024-05-01 12:00\" to timestamp (formats: "
            "%Y-%m-%d %H:%M:%S, %d/%b/%Y:%T %z, epoch_seconds, rfc3339): not an RFC 3339 "
            "timestamp");
}

TEST(TransformTest, TimestampOp) {
  const std::string millis = R"(transforms { op: "timestamp" path: "/ts"
      input_formats: "rfc3339" input_formats: "%Y%m%d" output_format: "epoch_millis" })";
  EXPECT_EQ(Transform(millis, R"({"ts":"2024-05-01T12:00:00.001Z"})"), R"({"ts":1714564800001})");
  EXPECT_EQ(Transform(millis, R"({"ts":"20240501"})"), R"({"ts":1714521600000})");
  EXPECT_EQ(Transform(millis, R"({"ts":1714564800001})"), R"({"ts":1714564800001})");
  EXPECT_EQ(Transform(millis, R"({"ts":"0000-01-01T00:00:00Z"})"), R"({"ts":-62167219200000})");
  EXPECT_EQ(Failure(millis, R"({"ts":"20241301"})"),
            "step 1 (timestamp /ts): cannot read \"20241301\" as a timestamp (formats: rfc3339, "
            "%Y%m%d): date or time field out of range");
  EXPECT_EQ(Failure(millis, R"({"ts":1e22})"),
            "step 1 (timestamp /ts): cannot read 1e22 as a timestamp (formats: rfc3339, %Y%m%d): "
            "timestamp outside years 0000-9999");
  EXPECT_EQ(Failure(millis, R"({"ts":1.5})"),
            "step 1 (timestamp /ts): cannot read 1.5 as a timestamp (formats: rfc3339, %Y%m%d): "
            "epoch milliseconds must be an integer");

  const std::string rfc = R"(transforms { op: "timestamp" path: "/ts"
      input_formats: "epoch_millis" input_formats: "%B %e, %Y" input_formats: "%y-%m-%dT%H:%M:%S.%f%z" })";
  EXPECT_EQ(Transform(rfc, R"({"ts":"1714564800000"})"), R"({"ts":"2024-05-01T12:00:00.000Z"})");
  EXPECT_EQ(Transform(rfc, R"({"ts":"march  7, 2024"})"), R"({"ts":"2024-03-07T00:00:00.000Z"})");
  EXPECT_EQ(Transform(rfc, R"({"ts":"99-12-31T23:59:59.9999-0100"})"),
            R"({"ts":"2000-01-01T00:59:59.999Z"})");
  EXPECT_EQ(Transform(rfc, R"({"ts":null})"), R"({"ts":null})");
  EXPECT_EQ(Failure(rfc, R"({"ts":"yesterday"})"),
            "step 1 (timestamp /ts): cannot read \"yesterday\" as a timestamp (formats: "
            "epoch_millis, %B %e, %Y, %y-%m-%dT%H:%M:%S.%f%z): does not match the pattern");
}

TEST(TransformTest, TimestampsIgnoreTheLocalTimeZone) {
  const char* old = std::getenv("TZ");
  const std::string saved = old == nullptr ? "" : old;
  setenv("TZ", "America/New_York", 1);
  tzset();
  const std::string result =
      Transform(R"(transforms { op: "cast" path: "/t" type: "timestamp" input_formats: "%F %T" })",
                R"({"t":"2024-01-15 08:30:00"})");
  if (old == nullptr) {
    unsetenv("TZ");
  } else {
    setenv("TZ", saved.c_str(), 1);
  }
  tzset();
  EXPECT_EQ(result, R"({"t":"2024-01-15T08:30:00.000Z"})");
}

TEST(TransformTest, MaskHashRedact) {
  const std::string mask4 = R"(transforms { op: "mask" path: "/card" length: 4 })";
  EXPECT_EQ(Transform(mask4, R"({"card":"4111111111111111"})"), R"({"card":"************1111"})");
  EXPECT_EQ(Transform(mask4, R"({"card":"ab"})"), R"({"card":"ab"})");
  EXPECT_EQ(Transform(mask4, R"({"card":4111111111111111})"), R"({"card":"************1111"})");
  EXPECT_EQ(Transform(R"(transforms { op: "mask" path: "/n" })", R"({"n":"Zoë €"})"),
            R"({"n":"*****"})");
  EXPECT_EQ(Transform(R"(transforms { op: "mask" path: "/n" length: 2 })", R"({"n":"Zoë€"})"),
            R"({"n":"**ë€"})");
  EXPECT_EQ(Failure(mask4, R"({"card":{"n":1}})"),
            "step 1 (mask /card): mask expects a string, number or bool, got object");

  const std::string hash = R"(transforms { op: "hash" path: "/email" })";
  EXPECT_EQ(Transform(hash, R"({"email":"a@b.c"})"),
            "{\"email\":\"" + HmacSha256Hex(kKey, "a@b.c") + "\"}");
  EXPECT_EQ(Transform(hash, R"({"email":42})"),
            "{\"email\":\"" + HmacSha256Hex(kKey, "42") + "\"}");
  EXPECT_EQ(Transform(hash, R"({"email":{"x":[1]}})"),
            "{\"email\":\"" + HmacSha256Hex(kKey, "{\"x\":[1]}") + "\"}");
  EXPECT_EQ(Transform(hash, R"({"email":null})"), R"({"email":null})");
  // A different key gives a different digest.
  std::shared_ptr<const TransformChain> other = MustCompile(hash, "other-key");
  EXPECT_EQ(RunChain(*other, R"({"email":"a@b.c"})").json,
            "{\"email\":\"" + HmacSha256Hex("other-key", "a@b.c") + "\"}");

  const std::string redact = R"(transforms { op: "redact" path: "/ssn" })";
  EXPECT_EQ(Transform(redact, R"({"ssn":"123-45-6789"})"), R"({"ssn":"[REDACTED]"})");
  EXPECT_EQ(Transform(redact, R"({"ssn":[1,2]})"), R"({"ssn":"[REDACTED]"})");
  EXPECT_EQ(Transform(redact, R"({"x":1})"), R"({"x":1})");
}

TEST(TransformTest, TruncateLowercaseTrim) {
  const std::string truncate = R"(transforms { op: "truncate" path: "/s" length: 3 })";
  EXPECT_EQ(Transform(truncate, R"({"s":"abcdef"})"), R"({"s":"abc"})");
  EXPECT_EQ(Transform(truncate, R"({"s":"ab"})"), R"({"s":"ab"})");
  EXPECT_EQ(Transform(truncate, R"({"s":"€€€€"})"), R"({"s":"€€€"})");  // whole characters
  EXPECT_EQ(Transform(truncate, R"({"s":"a😀bc"})"), R"({"s":"a😀b"})");
  EXPECT_EQ(Failure(truncate, R"({"s":12345})"),
            "step 1 (truncate /s): truncate expects a string, got number");

  const std::string lower = R"(transforms { op: "lowercase" path: "/e" })";
  EXPECT_EQ(Transform(lower, R"({"e":"Ann@Example.COM"})"), R"({"e":"ann@example.com"})");
  EXPECT_EQ(Transform(lower, R"({"e":"ÄBC"})"), R"({"e":"Äbc"})");  // ASCII only
  EXPECT_EQ(Failure(lower, R"({"e":true})"),
            "step 1 (lowercase /e): lowercase expects a string, got bool");

  const std::string trim = R"(transforms { op: "trim" path: "/n" })";
  EXPECT_EQ(Transform(trim, R"({"n":" \t x y \n"})"), R"({"n":"x y"})");
  EXPECT_EQ(Transform(trim, R"({"n":"   "})"), R"({"n":""})");
  EXPECT_EQ(Failure(trim, R"({"n":[" a "]})"),
            "step 1 (trim /n): trim expects a string, got array");
}

TEST(TransformTest, Flatten) {
  EXPECT_EQ(Transform(R"(transforms { op: "flatten" })",
                      R"({"a":{"b":1,"c":{"d":[1,{"e":2}]}},"f":2,"g":{}})"),
            R"({"a.b":1,"a.c.d":[1,{"e":2}],"f":2,"g":{}})");
  EXPECT_EQ(Transform(R"(transforms { op: "flatten" path: "/p" separator: "_" })",
                      R"({"p":{"x":{"y":1}},"q":{"r":{"s":1}}})"),
            R"({"p":{"x_y":1},"q":{"r":{"s":1}}})");
  EXPECT_EQ(Transform(R"(transforms { op: "flatten" path: "/p" })", R"({"q":1})"), R"({"q":1})");
  EXPECT_EQ(Failure(R"(transforms { op: "flatten" })", R"({"a.b":1,"a":{"b":2}})"),
            "step 1 (flatten): flatten: key \"a.b\" would occur twice");
  EXPECT_EQ(Failure(R"(transforms { op: "flatten" path: "/p" })", R"({"p":[1]})"),
            "step 1 (flatten /p): flatten expects an object, got array");
  // Deep nesting is handled without recursion.
  constexpr int kDepth = 5000;
  std::string deep;
  for (int i = 0; i < kDepth; ++i) deep += "{\"k\":";
  deep += "1";
  deep += std::string(kDepth, '}');
  std::shared_ptr<const TransformChain> chain = MustCompile(R"(transforms { op: "flatten" })");
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(deep.data(), deep.size());
  ASSERT_FALSE(doc.HasParseError());
  TransformFailure failure;
  ASSERT_EQ(chain->Apply(&doc, RecordMetadata{}, &failure), Result::kKeep) << failure.message;
  ASSERT_EQ(doc.MemberCount(), 1u);
  EXPECT_EQ(doc.MemberBegin()->name.GetStringLength(), static_cast<unsigned>(kDepth * 2 - 1));
  EXPECT_EQ(doc.MemberBegin()->value.GetInt(), 1);
}

TEST(TransformTest, AddMetadata) {
  const std::string step = R"(transforms { op: "add_metadata"
      fields { key: "ingest_time" value: "/_meta/ingested" }
      fields { key: "event_time" value: "/_meta/event" }
      fields { key: "partition" value: "/_meta/partition" }
      fields { key: "offset" value: "/_meta/offset" }
      fields { key: "producer_id" value: "/_meta/producer" }
      fields { key: "dataset" value: "/_meta/dataset" }
      fields { key: "schema_version" value: "/_meta/schema" }
      fields { key: "transform_version" value: "/_meta/transform" } })";
  std::shared_ptr<const TransformChain> chain = MustCompile(step);
  ASSERT_NE(chain, nullptr);
  RecordMetadata meta;
  meta.dataset = "orders";
  meta.partition = 3;
  meta.offset = 18446744073709551615u;
  meta.producer_id = "p-1";
  meta.ingest_time_millis = 1714564800123;
  meta.event_time_millis = 1714564700000;
  meta.schema_version = 4;
  meta.transform_version = 2;
  // Written in name order (protobuf map order is not stable).
  EXPECT_EQ(RunChain(*chain, R"({"a":1})", meta).json,
            R"({"a":1,"_meta":{"dataset":"orders","event":"2024-05-01T11:58:20.000Z",)"
            R"("ingested":"2024-05-01T12:00:00.123Z","offset":18446744073709551615,)"
            R"("partition":3,"producer":"p-1","schema":4,"transform":2}})");
  meta.event_time_millis.reset();
  EXPECT_EQ(
      RunChain(
          *MustCompile(
              R"(transforms { op: "add_metadata" fields { key: "event_time" value: "/et" } })"),
          R"({})", meta)
          .json,
      R"({"et":null})");
  // A target through a scalar fails the record.
  Outcome out = RunChain(
      *MustCompile(R"(transforms { op: "add_metadata" fields { key: "dataset" value: "/a/b" } })"),
      R"({"a":5})", meta);
  EXPECT_EQ(out.result, Result::kFailed);
  EXPECT_EQ(out.failure.message,
            "step 1 (add_metadata): cannot write /a/b: /a is number, not an object");
  EXPECT_EQ(out.failure.path, "");
}

TEST(TransformTest, Filter) {
  std::shared_ptr<const TransformChain> chain =
      MustCompile(R"(transforms { op: "filter" expr: "status == 'test'" }
                     transforms { op: "set" path: "/seen" value_json: "true" })");
  ASSERT_NE(chain, nullptr);
  Outcome out = RunChain(*chain, R"({"status":"test"})");
  EXPECT_EQ(out.result, Result::kFiltered);
  EXPECT_EQ(out.json, R"({"status":"test"})");  // later steps did not run
  EXPECT_EQ(RunChain(*chain, R"({"status":"live"})").json, R"({"status":"live","seen":true})");
  EXPECT_EQ(RunChain(*chain, R"({})").result, Result::kKeep);  // null is not true: kept
  out = RunChain(*MustCompile(R"(transforms { op: "filter" expr: "n > 1" })"), R"({"n":"x"})");
  EXPECT_EQ(out.result, Result::kFailed);
  EXPECT_EQ(out.failure.message,
            "step 1 (filter): operator '>' cannot compare string and number (only numbers with "
            "numbers, strings with strings) (position 3)");
  out = RunChain(*MustCompile(R"(transforms { op: "filter" expr: "n" })"), R"({"n":1})");
  EXPECT_EQ(out.result, Result::kFailed);
  EXPECT_EQ(out.failure.message, "step 1 (filter): expression must evaluate to a bool, got number");
}

TEST(TransformTest, CompileErrorsNameTheStep) {
  EXPECT_EQ(CompileError(R"(transforms { op: "explode" path: "/a" })"),
            "step 1 (explode): unknown op \"explode\" (one of rename, drop, keep, set, default, "
            "cast, timestamp, mask, hash, redact, truncate, lowercase, trim, flatten, "
            "add_metadata, filter)");
  EXPECT_EQ(CompileError(R"(transforms { path: "/a" })"),
            "step 1: missing op (one of rename, drop, keep, set, default, cast, timestamp, mask, "
            "hash, redact, truncate, lowercase, trim, flatten, add_metadata, filter)");
  EXPECT_EQ(CompileError(R"(transforms { op: "keep" path: "/a" paths: "/b" })"),
            "step 1 (keep): field \"path\" is not used by keep");
  EXPECT_EQ(CompileError(R"(transforms { op: "redact" path: "/a" length: 3 separator: "-" })"),
            "step 1 (redact): field \"length\" is not used by redact; step 1 (redact): field "
            "\"separator\" is not used by redact");
  EXPECT_EQ(CompileError(R"(transforms { op: "drop" })"), "step 1 (drop): drop needs \"paths\"");
  EXPECT_EQ(CompileError(R"(transforms { op: "drop" paths: "" })"),
            "step 1 (drop): paths: the whole record (\"\") cannot be used with drop");
  EXPECT_EQ(CompileError(R"(transforms { op: "rename" path: "/a" })"),
            "step 1 (rename): rename needs \"to\"");
  EXPECT_EQ(CompileError(R"(transforms { op: "hash" })"), "step 1 (hash): hash needs \"path\"");
  EXPECT_EQ(CompileError(R"(transforms { op: "trim" path: "a/b" })"),
            "step 1 (trim): path: invalid JSON pointer \"a/b\" (must start with '/')");
  EXPECT_EQ(CompileError(R"(transforms { op: "trim" path: "/a~2" })"),
            "step 1 (trim): path: invalid JSON pointer \"/a~2\" ('~' must be followed by 0 or 1, "
            "at character 4)");
  EXPECT_EQ(CompileError(R"(transforms { op: "rename" path: "/a" to: "#/b" })"),
            "step 1 (rename): to: invalid JSON pointer \"#/b\" (must start with '/')");
  EXPECT_EQ(CompileError(R"(transforms { op: "set" path: "/a" value_json: "{\"a\":" })"),
            "step 1 (set): value_json is not valid JSON: Invalid value. (at byte 5)");
  EXPECT_EQ(CompileError(R"(transforms { op: "default" path: "/a" value_json: "1 2" })"),
            "step 1 (default): value_json is not valid JSON: The document root must not be "
            "followed by other values. (at byte 2)");
  EXPECT_EQ(CompileError(R"(transforms { op: "default" path: "/a" })"),
            "step 1 (default): default needs \"value_json\"");
  EXPECT_EQ(CompileError(R"(transforms { op: "set" path: "/a" value_json: "1" expr: "2" })"),
            "step 1 (set): set needs exactly one of \"value_json\" and \"expr\"");
  EXPECT_EQ(CompileError(R"(transforms { op: "set" path: "/a" })"),
            "step 1 (set): set needs exactly one of \"value_json\" and \"expr\"");
  EXPECT_EQ(CompileError(R"(transforms { op: "cast" path: "/a" type: "integer" })"),
            "step 1 (cast): unknown type \"integer\" (one of int, float, string, bool, "
            "timestamp)");
  EXPECT_EQ(CompileError(R"(transforms { op: "cast" path: "/a" })"),
            "step 1 (cast): cast needs \"type\"");
  EXPECT_EQ(
      CompileError(R"(transforms { op: "cast" path: "/a" type: "int" input_formats: "rfc3339" })"),
      "step 1 (cast): input_formats is only used by casts to timestamp");
  EXPECT_EQ(CompileError(
                R"(transforms { op: "cast" path: "/a" type: "timestamp" input_formats: "iso" })"),
            "step 1 (cast): unknown input format \"iso\" (use rfc3339, epoch_millis, "
            "epoch_seconds or a pattern with % directives)");
  EXPECT_EQ(CompileError(R"(transforms { op: "timestamp" path: "/a" input_formats: "%Y-%Q" })"),
            "step 1 (timestamp): input format \"%Y-%Q\": unsupported directive %Q (supported: "
            "%Y %y %m %d %e %H %M %S %f %z %b %B %T %F %%)");
  EXPECT_EQ(CompileError(R"(transforms { op: "timestamp" path: "/a" input_formats: "%Y%" })"),
            "step 1 (timestamp): input format \"%Y%\" ends with a lone '%'");
  EXPECT_EQ(CompileError(R"(transforms { op: "timestamp" path: "/a" output_format: "unix" })"),
            "step 1 (timestamp): unknown output_format \"unix\" (rfc3339 or epoch_millis)");
  EXPECT_EQ(CompileError(R"(transforms { op: "truncate" path: "/a" })"),
            "step 1 (truncate): truncate needs \"length\" greater than 0");
  EXPECT_EQ(CompileError(R"(transforms { op: "hash" path: "/a" })", ""),
            "step 1 (hash): hash needs a hash key (config: hash_key_file)");
  EXPECT_EQ(CompileError(R"(transforms { op: "add_metadata" fields { key: "host" value: "/h" } })"),
            "step 1 (add_metadata): unknown metadata field \"host\" (one of ingest_time, "
            "event_time, partition, offset, producer_id, dataset, schema_version, "
            "transform_version)");
  EXPECT_EQ(
      CompileError(R"(transforms { op: "add_metadata" fields { key: "offset" value: "o" } })"),
      "step 1 (add_metadata): fields[offset]: invalid JSON pointer \"o\" (must start with "
      "'/')");
  EXPECT_EQ(CompileError(R"(transforms { op: "add_metadata" })"),
            "step 1 (add_metadata): add_metadata needs \"fields\"");
  EXPECT_EQ(CompileError(R"(transforms { op: "filter" })"),
            "step 1 (filter): filter needs \"expr\"");
  EXPECT_EQ(CompileError(R"(transforms { op: "filter" expr: "a ==" })"),
            "step 1 (filter): position 5: expected a value (literal, field, function call or "
            "'('), found end of expression");
  EXPECT_EQ(CompileError(R"(transforms { op: "filter" expr: "x" paths: "/a" })"),
            "step 1 (filter): field \"paths\" is not used by filter");
}

TEST(TransformTest, CompileListsEveryBadStep) {
  EXPECT_EQ(CompileError(R"(
      transforms { op: "drop" paths: "/ok" }
      transforms { op: "cast" path: "/a" type: "integer" }
      transforms { op: "trim" path: "/ok" }
      transforms { op: "set" path: "/b" expr: "a +* 2" }
      transforms { op: "nope" })"),
            "step 2 (cast): unknown type \"integer\" (one of int, float, string, bool, "
            "timestamp); step 4 (set): position 4: expected a value (literal, field, function "
            "call or '('), found '*'; step 5 (nope): unknown op \"nope\" (one of rename, drop, "
            "keep, set, default, cast, timestamp, mask, hash, redact, truncate, lowercase, trim, "
            "flatten, add_metadata, filter)");
}

TEST(TransformTest, NonObjectRecordFails) {
  std::shared_ptr<const TransformChain> chain =
      MustCompile(R"(transforms { op: "drop" paths: "/a" })");
  Outcome out = RunChain(*chain, "[1,2]");
  EXPECT_EQ(out.result, Result::kFailed);
  EXPECT_EQ(out.failure.message, "the record is not a JSON object");
}

TEST(TransformTest, RealisticChain) {
  // Clean up an order event: normalise fields, protect PII, derive a total, stamp metadata,
  // and drop test traffic.
  std::shared_ptr<const TransformChain> chain = MustCompile(R"pb(
    transforms { op: "filter" expr: "lower(coalesce(env, 'prod')) == 'test'" }
    transforms { op: "rename" path: "/ts" to: "/event/time" }
    transforms {
      op: "timestamp"
      path: "/event/time"
      input_formats: "rfc3339"
      input_formats: "%Y-%m-%d %H:%M:%S"
    }
    transforms { op: "cast" path: "/qty" type: "int" }
    transforms { op: "set" path: "/total" expr: "round(price * qty, 2)" }
    transforms { op: "hash" path: "/customer/email" }
    transforms { op: "mask" path: "/card" length: 4 }
    transforms { op: "drop" paths: "/env" paths: "/debug" }
    transforms {
      op: "add_metadata"
      fields { key: "offset" value: "/_offset" }
    })pb");
  ASSERT_NE(chain, nullptr);
  RecordMetadata meta;
  meta.offset = 99;
  Outcome out = RunChain(*chain,
                         R"({"ts":"2024-05-01 12:00:00","qty":"3","price":1.1,"env":"prod",)"
                         R"("customer":{"email":"a@b.c"},"card":"4111111111111111","debug":{}})",
                         meta);
  ASSERT_EQ(out.result, Result::kKeep) << out.failure.message;
  EXPECT_EQ(out.json,
            R"({"qty":3,"price":1.1,"customer":{"email":")" + HmacSha256Hex(kKey, "a@b.c") +
                R"("},"card":"************1111","event":{"time":"2024-05-01T12:00:00.000Z"},)"
                R"("total":3.3,"_offset":99})");

  EXPECT_EQ(RunChain(*chain, R"({"env":"TEST","qty":"1"})").result, Result::kFiltered);

  out = RunChain(*chain, R"({"ts":"2024-05-01 12:00:00","qty":"three","price":1})");
  EXPECT_EQ(out.result, Result::kFailed);
  EXPECT_EQ(out.failure.step, 4u);
  EXPECT_EQ(out.failure.op, "cast");
  EXPECT_EQ(out.failure.path, "/qty");
  EXPECT_EQ(out.failure.message, "step 4 (cast /qty): cannot cast \"three\" to int");
}

TEST(TransformTest, ConcurrentApplyIsSafe) {
  std::shared_ptr<const TransformChain> chain = MustCompile(R"(
      transforms { op: "set" path: "/d" expr: "a * 2" }
      transforms { op: "hash" path: "/s" }
      transforms { op: "default" path: "/x" value_json: "{\"k\":[1,2]}" })");
  ASSERT_NE(chain, nullptr);
  const std::string expected =
      R"({"a":2,"s":")" + HmacSha256Hex(kKey, "v") + R"(","d":4,"x":{"k":[1,2]}})";
  std::vector<int> good(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        rapidjson::Document doc;
        doc.Parse(R"({"a":2,"s":"v"})");
        TransformFailure failure;
        if (chain->Apply(&doc, RecordMetadata{}, &failure) == Result::kKeep &&
            ToJson(doc) == expected) {
          ++good[t];
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int g : good) EXPECT_EQ(g, 500);
}

}  // namespace
}  // namespace wharf::pipeline::contract
