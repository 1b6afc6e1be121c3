#include "pipeline/contract/expression.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "rapidjson/document.h"

namespace wharf::pipeline::contract {
namespace {

// A record used by most tests.
constexpr char kRecord[] = R"({
  "amount": 12.5, "qty": 3, "name": "  Widget  ", "country": "DE", "empty": "",
  "nothing": null, "flag": true, "off": false, "big": 9223372036854775807,
  "customer": {"email": "Ann@Example.com", "address": {"city": "Köln"}},
  "items": [{"sku": "A1", "price": 2}, {"sku": "B2", "price": 3.5}],
  "tags": ["new", "sale", 7, null],
  "weird key": {"x": 1}, "in": "kw", "utf": "héllo€",
  "stamp": "2024-05-01"
})";

rapidjson::Document Parse(const char* json) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(json);
  EXPECT_FALSE(doc.HasParseError()) << json;
  return doc;
}

std::shared_ptr<const Expression> MustCompile(const std::string& text) {
  absl::StatusOr<std::shared_ptr<const Expression>> e = Expression::Compile(text);
  EXPECT_TRUE(e.ok()) << text << ": " << e.status();
  return e.ok() ? *e : nullptr;
}

// Evaluates `text` on kRecord and returns the result's compact JSON, or "error: <message>".
std::string Eval(const std::string& text, const char* record = kRecord) {
  std::shared_ptr<const Expression> e = MustCompile(text);
  if (e == nullptr) return "compile failed";
  rapidjson::Document doc = Parse(record);
  absl::StatusOr<ExprValue> v = e->Evaluate(doc);
  if (!v.ok()) return "error: " + std::string(v.status().message());
  return v->ToJsonText();
}

std::string CompileError(const std::string& text) {
  absl::StatusOr<std::shared_ptr<const Expression>> e = Expression::Compile(text);
  if (e.ok()) return "compiled";
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(e.status().message());
}

TEST(ExpressionTest, Literals) {
  EXPECT_EQ(Eval("42"), "42");
  EXPECT_EQ(Eval("3.25"), "3.25");
  EXPECT_EQ(Eval("1e3"), "1000");  // integral -> int
  EXPECT_EQ(Eval("2.5E-1"), "0.25");
  EXPECT_EQ(Eval("4.0"), "4");
  EXPECT_EQ(Eval("-7"), "-7");
  EXPECT_EQ(Eval("true"), "true");
  EXPECT_EQ(Eval("false"), "false");
  EXPECT_EQ(Eval("null"), "null");
  EXPECT_EQ(Eval("\"dq\""), "\"dq\"");
  EXPECT_EQ(Eval("'sq'"), "\"sq\"");
  // Beyond int64: a double.
  EXPECT_EQ(Eval("92233720368547758070 > 1"), "true");
  EXPECT_EQ(Eval("-9223372036854775808"), "-9223372036854775808");
}

TEST(ExpressionTest, StringEscapes) {
  EXPECT_EQ(Eval(R"("a\"b")"), R"("a\"b")");
  EXPECT_EQ(Eval(R"('it\'s')"), R"("it's")");
  EXPECT_EQ(Eval(R"('say "hi"')"), R"("say \"hi\"")");
  EXPECT_EQ(Eval(R"("back\\slash")"), R"("back\\slash")");
  EXPECT_EQ(Eval(R"("l1\nl2\tx\r")"), R"("l1\nl2\tx\r")");
  EXPECT_EQ(Eval(R"("\u00e9" == "é")"), "true");
  EXPECT_EQ(Eval(R"("\u20AC")"), "\"€\"");
  EXPECT_EQ(Eval(R"(len("\uD83D\uDE00"))"), "1");  // surrogate pair: one character
  EXPECT_EQ(Eval(R"("a\/b")"), R"("a/b")");
}

TEST(ExpressionTest, FieldPaths) {
  EXPECT_EQ(Eval("qty"), "3");
  EXPECT_EQ(Eval("amount"), "12.5");
  EXPECT_EQ(Eval("customer.address.city"), "\"Köln\"");
  EXPECT_EQ(Eval("items[1].sku"), "\"B2\"");
  EXPECT_EQ(Eval("items[0]"), R"({"sku":"A1","price":2})");
  EXPECT_EQ(Eval("tags[2]"), "7");
  EXPECT_EQ(Eval(R"($["weird key"].x)"), "1");
  EXPECT_EQ(Eval(R"($["in"])"), "\"kw\"");
  EXPECT_EQ(Eval("$.qty"), "3");
  EXPECT_EQ(Eval(R"(customer["email"])"), "\"Ann@Example.com\"");
  EXPECT_EQ(Eval("customer.in"), "null");  // keywords are fine after '.'
  EXPECT_EQ(Eval("big"), "9223372036854775807");
  // Missing fields and paths through non-objects evaluate to null.
  EXPECT_EQ(Eval("missing"), "null");
  EXPECT_EQ(Eval("customer.missing.deeper"), "null");
  EXPECT_EQ(Eval("items[5].sku"), "null");
  EXPECT_EQ(Eval("qty.x"), "null");
  EXPECT_EQ(Eval("qty[0]"), "null");
  EXPECT_EQ(Eval("customer[0]"), "null");
  EXPECT_EQ(Eval("len($)"), "16");
}

TEST(ExpressionTest, ArithmeticAndPrecedence) {
  EXPECT_EQ(Eval("1 + 2 * 3"), "7");
  EXPECT_EQ(Eval("(1 + 2) * 3"), "9");
  EXPECT_EQ(Eval("10 - 2 - 3"), "5");  // left-associative
  EXPECT_EQ(Eval("100 / 10 / 5"), "2");
  EXPECT_EQ(Eval("7 / 2"), "3.5");
  EXPECT_EQ(Eval("8 / 2"), "4");
  EXPECT_EQ(Eval("7 % 3"), "1");
  EXPECT_EQ(Eval("-7 % 3"), "-1");
  EXPECT_EQ(Eval("7.5 % 2"), "1.5");
  EXPECT_EQ(Eval("-qty"), "-3");
  EXPECT_EQ(Eval("- -qty"), "3");
  EXPECT_EQ(Eval("-2 * -3"), "6");
  EXPECT_EQ(Eval("amount * qty"), "37.5");
  EXPECT_EQ(Eval("0.1 + 0.2 > 0.3"), "true");
  EXPECT_EQ(Eval("1 + 2 == 3 && 2 * 2 == 4"), "true");
  EXPECT_EQ(Eval("'ab' + 'cd'"), "\"abcd\"");
  EXPECT_EQ(Eval("country + '-' + to_string(qty)"), "\"DE-3\"");
}

TEST(ExpressionTest, IntegerOverflowFallsBackToDouble) {
  EXPECT_EQ(Eval("big + 1 > big"), "true");
  // Doubles are written the way RapidJSON writes them.
  EXPECT_EQ(Eval("big + 1"), "9223372036854776000.0");
  EXPECT_EQ(Eval("big * 2"), "18446744073709553000.0");
  // -2^63 - 9 as a double rounds to -2^63, which is back in range: an integer again.
  EXPECT_EQ(Eval("-big - 10"), "-9223372036854775808");
  EXPECT_EQ(Eval("abs(-9223372036854775807 - 1)"), "9223372036854776000.0");
  EXPECT_EQ(Eval("(-9223372036854775807 - 1) % -1"), "0");
  EXPECT_EQ(Eval("(-9223372036854775807 - 1) / -1"), "9223372036854776000.0");
}

TEST(ExpressionTest, ArithmeticRuntimeErrors) {
  EXPECT_EQ(Eval("qty / 0"), "error: operator '/': division by zero (position 5)");
  EXPECT_EQ(Eval("qty / (1 - 1.0)"), "error: operator '/': division by zero (position 5)");
  EXPECT_EQ(Eval("qty % 0"), "error: operator '%': remainder by zero (position 5)");
  EXPECT_EQ(Eval("name - 1"),
            "error: operator '-' expects two numbers, got string and number (position 6)");
  EXPECT_EQ(Eval("name + 1"),
            "error: operator '+' expects two numbers or two strings, got "
            "string and number (position 6)");
  EXPECT_EQ(Eval("flag * 2"),
            "error: operator '*' expects two numbers, got bool and number (position 6)");
  EXPECT_EQ(Eval("-name"), "error: unary '-' expects a number, got string (position 1)");
  EXPECT_EQ(Eval("1e308 * 10"),
            "error: operator '*' overflowed (the result is not a finite number) (position 7)");
  EXPECT_EQ(Eval("items + 1"),
            "error: operator '+' expects two numbers or two strings, got array and number "
            "(position 7)");
}

TEST(ExpressionTest, NullPropagation) {
  EXPECT_EQ(Eval("missing + 1"), "null");
  EXPECT_EQ(Eval("1 - nothing"), "null");
  EXPECT_EQ(Eval("missing * 'x'"), "null");  // null wins before the type check
  EXPECT_EQ(Eval("-missing"), "null");
  EXPECT_EQ(Eval("nothing / 0"), "null");
  EXPECT_EQ(Eval("missing < 5"), "null");
  EXPECT_EQ(Eval("5 >= nothing"), "null");
  EXPECT_EQ(Eval("lower(missing)"), "null");
  EXPECT_EQ(Eval("len(nothing)"), "null");
}

TEST(ExpressionTest, Comparisons) {
  EXPECT_EQ(Eval("qty == 3"), "true");
  EXPECT_EQ(Eval("qty != 3"), "false");
  EXPECT_EQ(Eval("qty == 3.0"), "true");
  EXPECT_EQ(Eval("amount > 12"), "true");
  EXPECT_EQ(Eval("amount >= 12.5"), "true");
  EXPECT_EQ(Eval("amount < 12.5"), "false");
  EXPECT_EQ(Eval("amount <= 12.5"), "true");
  EXPECT_EQ(Eval("big > 9223372036854775806"), "true");
  EXPECT_EQ(Eval("big < 9.3e18"), "true");
  EXPECT_EQ(Eval("'abc' < 'abd'"), "true");
  EXPECT_EQ(Eval("'B' < 'a'"), "true");  // bytewise
  EXPECT_EQ(Eval("'z' < 'é'"), "true");  // UTF-8 bytes above ASCII
  EXPECT_EQ(Eval("country == 'DE'"), "true");
  // Equality across types: never equal, never an error.
  EXPECT_EQ(Eval("qty == '3'"), "false");
  EXPECT_EQ(Eval("qty != '3'"), "true");
  EXPECT_EQ(Eval("flag == 1"), "false");
  EXPECT_EQ(Eval("null == null"), "true");
  EXPECT_EQ(Eval("missing == null"), "true");
  EXPECT_EQ(Eval("nothing == missing"), "true");
  EXPECT_EQ(Eval("qty == null"), "false");
  EXPECT_EQ(Eval("null != 0"), "true");
  EXPECT_EQ(Eval("items[0] == items[0]"), "true");
  EXPECT_EQ(Eval("items[0] == items[1]"), "false");
  EXPECT_EQ(Eval("customer == items"), "false");
  // Ordering across types is an error that names operator and types.
  EXPECT_EQ(Eval("name < 5"),
            "error: operator '<' cannot compare string and number (only numbers with numbers, "
            "strings with strings) (position 6)");
  EXPECT_EQ(Eval("flag >= off"),
            "error: operator '>=' cannot compare bool and bool (only numbers with numbers, "
            "strings with strings) (position 6)");
}

TEST(ExpressionTest, ThreeValuedLogic) {
  EXPECT_EQ(Eval("true && true"), "true");
  EXPECT_EQ(Eval("true && false"), "false");
  EXPECT_EQ(Eval("false || true"), "true");
  EXPECT_EQ(Eval("false || false"), "false");
  EXPECT_EQ(Eval("null && false"), "false");
  EXPECT_EQ(Eval("false && null"), "false");
  EXPECT_EQ(Eval("null && true"), "null");
  EXPECT_EQ(Eval("null || true"), "true");
  EXPECT_EQ(Eval("true || null"), "true");
  EXPECT_EQ(Eval("null || false"), "null");
  EXPECT_EQ(Eval("null || null"), "null");
  EXPECT_EQ(Eval("!null"), "null");
  EXPECT_EQ(Eval("!flag"), "false");
  EXPECT_EQ(Eval("!!flag"), "true");
  EXPECT_EQ(Eval("flag and not off"), "true");
  EXPECT_EQ(Eval("off or flag"), "true");
  EXPECT_EQ(Eval("missing < 1 || qty == 3"), "true");
  EXPECT_EQ(Eval("missing < 1 && qty == 3"), "null");
  // Short circuit: the division by zero is never evaluated.
  EXPECT_EQ(Eval("false && 1 / 0 == 1"), "false");
  EXPECT_EQ(Eval("true || 1 / 0 == 1"), "true");
  // Operand types.
  EXPECT_EQ(Eval("qty && true"), "error: operator '&&' expects bools, got number (position 1)");
  EXPECT_EQ(Eval("false || name"), "error: operator '||' expects bools, got string (position 10)");
  EXPECT_EQ(Eval("!qty"), "error: operator '!' expects a bool, got number (position 1)");
}

TEST(ExpressionTest, LogicalPrecedence) {
  // && binds tighter than ||.
  EXPECT_EQ(Eval("true || false && false"), "true");
  EXPECT_EQ(Eval("(true || false) && false"), "false");
  // not binds looser than comparisons: not qty == 4  ->  not (qty == 4).
  EXPECT_EQ(Eval("not qty == 4"), "true");
  EXPECT_EQ(Eval("!qty == 3"), "false");
  EXPECT_EQ(Eval("!(qty == 3) || country == 'DE'"), "true");
  // Comparisons bind tighter than && and looser than arithmetic.
  EXPECT_EQ(Eval("qty + 1 == 4 && amount * 2 == 25"), "true");
}

TEST(ExpressionTest, InList) {
  EXPECT_EQ(Eval("country in ['DE', 'FR']"), "true");
  EXPECT_EQ(Eval("country in ['US']"), "false");
  EXPECT_EQ(Eval("country not in ['US', 'CA']"), "true");
  EXPECT_EQ(Eval("qty in [1, 2, 1 + 2]"), "true");
  EXPECT_EQ(Eval("qty in []"), "false");
  EXPECT_EQ(Eval("qty in ['3']"), "false");
  EXPECT_EQ(Eval("missing in [1, null]"), "null");
  EXPECT_EQ(Eval("not country in ['DE']"), "false");
}

TEST(ExpressionTest, StringFunctions) {
  EXPECT_EQ(Eval("len(name)"), "10");
  EXPECT_EQ(Eval("len(utf)"), "6");  // code points, not bytes
  EXPECT_EQ(Eval("len(empty)"), "0");
  EXPECT_EQ(Eval("len(items)"), "2");
  EXPECT_EQ(Eval("len(customer)"), "2");
  EXPECT_EQ(Eval("lower(customer.email)"), "\"ann@example.com\"");
  EXPECT_EQ(Eval("upper(country + 'x')"), "\"DEX\"");
  EXPECT_EQ(Eval("upper(utf)"), "\"HéLLO€\"");  // ASCII only
  EXPECT_EQ(Eval("trim(name)"), "\"Widget\"");
  EXPECT_EQ(Eval("trim('\\t\\n x \\r')"), "\"x\"");
  EXPECT_EQ(Eval("substr(utf, 1, 3)"), "\"éll\"");
  EXPECT_EQ(Eval("substr(utf, 4)"), "\"o€\"");
  EXPECT_EQ(Eval("substr(utf, -2)"), "\"o€\"");
  EXPECT_EQ(Eval("substr(utf, 10)"), "\"\"");
  EXPECT_EQ(Eval("substr(utf, 2, 100)"), "\"llo€\"");
  EXPECT_EQ(Eval("substr(utf, -100, 2)"), "\"hé\"");
  EXPECT_EQ(Eval("contains(customer.email, '@')"), "true");
  EXPECT_EQ(Eval("contains(customer.email, 'xyz')"), "false");
  EXPECT_EQ(Eval("contains(tags, 'sale')"), "true");
  EXPECT_EQ(Eval("contains(tags, 7)"), "true");
  EXPECT_EQ(Eval("contains(tags, '7')"), "false");
  EXPECT_EQ(Eval("contains(tags, null)"), "true");
  EXPECT_EQ(Eval("contains(items, items[1])"), "true");
  EXPECT_EQ(Eval("starts_with(stamp, '2024-')"), "true");
  EXPECT_EQ(Eval("starts_with(stamp, '2023')"), "false");
  EXPECT_EQ(Eval("ends_with(customer.email, '.com')"), "true");
  EXPECT_EQ(Eval("ends_with('a', 'abc')"), "false");
  EXPECT_EQ(Eval("matches(stamp, '^\\\\d{4}-\\\\d{2}-\\\\d{2}$')"), "true");
  EXPECT_EQ(Eval("matches(customer.email, '(?i)example')"), "true");
  EXPECT_EQ(Eval("matches(name, '^W')"), "false");
  EXPECT_EQ(Eval("matches(missing, 'x')"), "null");
  EXPECT_EQ(Eval("to_string(amount)"), "\"12.5\"");
  EXPECT_EQ(Eval("to_string(flag)"), "\"true\"");
  EXPECT_EQ(Eval("to_string(items[0])"), R"("{\"sku\":\"A1\",\"price\":2}")");
  EXPECT_EQ(Eval("to_string(name)"), "\"  Widget  \"");
  EXPECT_EQ(Eval("to_string(missing)"), "null");
}

TEST(ExpressionTest, StringFunctionTypeErrors) {
  EXPECT_EQ(Eval("len(qty)"),
            "error: len() expects a string, array or object, got number (position 1)");
  EXPECT_EQ(Eval("lower(qty)"), "error: lower() expects a string, got number (position 1)");
  EXPECT_EQ(Eval("trim(flag)"), "error: trim() expects a string, got bool (position 1)");
  EXPECT_EQ(Eval("substr(name, 1.5)"),
            "error: substr() expects an integer start, got a fractional number (position 1)");
  EXPECT_EQ(Eval("substr(name, 'a')"),
            "error: substr() expects an integer start, got string (position 1)");
  EXPECT_EQ(Eval("substr(name, 0, -1)"),
            "error: substr() expects a non-negative length (position 1)");
  EXPECT_EQ(Eval("starts_with(qty, '3')"),
            "error: starts_with() expects two strings, got number and string (position 1)");
  EXPECT_EQ(Eval("contains(customer, 'x')"),
            "error: contains() expects two strings (or an array and a value), got object and "
            "string (position 1)");
  EXPECT_EQ(Eval("matches(qty, 'x')"),
            "error: matches() expects a string, got number (position 1)");
}

TEST(ExpressionTest, NullAndPresenceFunctions) {
  EXPECT_EQ(Eval("coalesce(missing, nothing, country, 'x')"), "\"DE\"");
  EXPECT_EQ(Eval("coalesce(missing, nothing)"), "null");
  EXPECT_EQ(Eval("coalesce(qty, 1 / 0)"), "3");  // later arguments not evaluated
  EXPECT_EQ(Eval("is_null(missing)"), "true");
  EXPECT_EQ(Eval("is_null(nothing)"), "true");
  EXPECT_EQ(Eval("is_null(empty)"), "false");
  EXPECT_EQ(Eval("exists(nothing)"), "true");  // present, even though null
  EXPECT_EQ(Eval("exists(missing)"), "false");
  EXPECT_EQ(Eval("exists(customer.address.city)"), "true");
  EXPECT_EQ(Eval("exists(items[2])"), "false");
  EXPECT_EQ(Eval("exists($[\"weird key\"])"), "true");
}

TEST(ExpressionTest, NumericFunctions) {
  EXPECT_EQ(Eval("abs(-3)"), "3");
  EXPECT_EQ(Eval("abs(-2.5)"), "2.5");
  EXPECT_EQ(Eval("floor(amount)"), "12");
  EXPECT_EQ(Eval("ceil(amount)"), "13");
  EXPECT_EQ(Eval("floor(-1.5)"), "-2");
  EXPECT_EQ(Eval("round(amount)"), "13");  // half away from zero
  EXPECT_EQ(Eval("round(-2.5)"), "-3");
  EXPECT_EQ(Eval("round(3.14159, 2)"), "3.14");
  EXPECT_EQ(Eval("round(qty, 3)"), "3");
  EXPECT_EQ(Eval("min(3, 1.5, 2)"), "1.5");
  EXPECT_EQ(Eval("max(3, 1.5, 2)"), "3");
  EXPECT_EQ(Eval("max('a', 'c', 'b')"), "\"c\"");
  EXPECT_EQ(Eval("min(qty)"), "3");
  EXPECT_EQ(Eval("min(qty, missing)"), "null");
  EXPECT_EQ(Eval("to_number('42')"), "42");
  EXPECT_EQ(Eval("to_number(' -1.25 ')"), "-1.25");
  EXPECT_EQ(Eval("to_number('+7')"), "7");
  EXPECT_EQ(Eval("to_number('1e3')"), "1000");
  EXPECT_EQ(Eval("to_number('12abc')"), "null");
  EXPECT_EQ(Eval("to_number('inf')"), "null");
  EXPECT_EQ(Eval("to_number('')"), "null");
  EXPECT_EQ(Eval("to_number(flag)"), "1");
  EXPECT_EQ(Eval("to_number(amount)"), "12.5");
  EXPECT_EQ(Eval("abs(name)"), "error: abs() expects a number, got string (position 1)");
  EXPECT_EQ(Eval("floor('1')"), "error: floor() expects a number, got string (position 1)");
  EXPECT_EQ(Eval("round(1.5, 16)"),
            "error: round() expects a digit count from 0 to 15 (position 1)");
  EXPECT_EQ(Eval("min(1, 'a')"),
            "error: min() expects all numbers or all strings, got number and string "
            "(position 1)");
  EXPECT_EQ(Eval("max(flag)"),
            "error: max() expects all numbers or all strings, got bool and bool (position 1)");
  EXPECT_EQ(Eval("to_number(items)"),
            "error: to_number() expects a string, number or bool, got array (position 1)");
}

TEST(ExpressionTest, EvaluateBool) {
  rapidjson::Document doc = Parse(kRecord);
  auto check = [&](const std::string& text) -> std::string {
    std::shared_ptr<const Expression> e = MustCompile(text);
    if (e == nullptr) return "compile failed";
    absl::StatusOr<bool> r = e->EvaluateBool(doc);
    if (!r.ok()) return "error: " + std::string(r.status().message());
    return *r ? "true" : "false";
  };
  EXPECT_EQ(check("qty > 1"), "true");
  EXPECT_EQ(check("qty > 5"), "false");
  EXPECT_EQ(check("missing > 5"), "false");  // null fails a rule
  EXPECT_EQ(check("null"), "false");
  EXPECT_EQ(check("qty"), "error: expression must evaluate to a bool, got number");
  EXPECT_EQ(check("name < 1"),
            "error: operator '<' cannot compare string and number (only numbers with numbers, "
            "strings with strings) (position 6)");
}

TEST(ExpressionTest, SyntaxErrorsWithPositions) {
  EXPECT_EQ(CompileError(""), "position 1: empty expression");
  // Invalid UTF-8 that starts with continuation bytes (found by expression_fuzz): positions stay
  // 1-based; they used to read "position 0".
  EXPECT_TRUE(absl::StartsWith(CompileError("\xa7\xa7$"), "position 1: "))
      << CompileError("\xa7\xa7$");
  EXPECT_EQ(CompileError("   "), "position 1: empty expression");
  EXPECT_EQ(CompileError("(qty + 1"),
            "position 9: expected ')' closing the '(' at position 1, found end of expression");
  EXPECT_EQ(CompileError("qty +"),
            "position 6: expected a value (literal, field, function call or '('), found end of "
            "expression");
  EXPECT_EQ(CompileError("qty = 3"), "position 5: unexpected '=' (use '==' to compare)");
  EXPECT_EQ(CompileError("a & b"), "position 3: unexpected '&' (did you mean '&&'?)");
  EXPECT_EQ(CompileError("a | b"), "position 3: unexpected '|' (did you mean '||'?)");
  EXPECT_EQ(CompileError("qty 3"),
            "position 5: unexpected '3' after a complete expression (missing operator?)");
  EXPECT_EQ(CompileError("'abc"), "position 1: unterminated string literal");
  EXPECT_EQ(CompileError("x == \"a\\qb\""),
            "position 8: unknown escape sequence '\\q' in string literal");
  EXPECT_EQ(CompileError("'\\u12G4'"), "position 6: \\u needs four hex digits");
  EXPECT_EQ(CompileError("'\\uD800'"), "position 2: unpaired surrogate in \\u escape");
  EXPECT_EQ(CompileError("1.2.3"), "position 4: malformed number: unexpected '.'");
  EXPECT_EQ(CompileError("12abc"), "position 3: malformed number: unexpected 'a'");
  EXPECT_EQ(CompileError("1e"),
            "position 2: malformed number: expected digits after the "
            "exponent");
  EXPECT_EQ(CompileError("1e999"), "position 1: number out of range: 1e999");
  EXPECT_EQ(CompileError("qty # 1"), "position 5: unexpected character '#'");
  // Positions count characters, not bytes: 'é' is two bytes.
  EXPECT_EQ(CompileError("'é' == § "), "position 8: unexpected character '§'");
  EXPECT_EQ(CompileError("a < b < c"),
            "position 7: comparisons cannot be chained; use parentheses and && to combine them");
  EXPECT_EQ(CompileError("items[-1]"),
            "position 7: expected an array index (a non-negative integer) or a quoted field "
            "name after '[', found '-'");
  EXPECT_EQ(CompileError("items[0"),
            "position 8: expected ']' closing the '[' at position 6, found end of expression");
  EXPECT_EQ(CompileError("a.'b'"),
            "position 3: expected a field name after '.', found ''b'' (use [\"...\"] for other "
            "names)");
  EXPECT_EQ(CompileError("x in 'a'"),
            "position 6: expected '[' starting the list after 'in', found ''a''");
  EXPECT_EQ(CompileError("x in [1, 2"),
            "position 11: expected ',' or ']' closing the list opened at position 6, found end "
            "of expression");
  EXPECT_EQ(CompileError("len(a b)"),
            "position 7: expected ',' or ')' closing the call of len() opened at position 4, "
            "found 'b'");
  EXPECT_EQ(CompileError(")"),
            "position 1: expected a value (literal, field, function call or '('), found ')'");
}

TEST(ExpressionTest, FunctionCompileErrors) {
  EXPECT_EQ(CompileError("1 + now_millis()"), "position 5: unknown function 'now_millis'");
  EXPECT_EQ(CompileError("frobnicate(x)"), "position 1: unknown function 'frobnicate'");
  EXPECT_EQ(CompileError("len()"), "position 1: len() takes 1 argument, got 0");
  EXPECT_EQ(CompileError("x && lower(a, b)"), "position 6: lower() takes 1 argument, got 2");
  EXPECT_EQ(CompileError("substr(a)"), "position 1: substr() takes 2 or 3 arguments, got 1");
  EXPECT_EQ(CompileError("coalesce()"),
            "position 1: coalesce() takes at least 1 arguments, "
            "got 0");
  EXPECT_EQ(CompileError("matches(a, b)"),
            "position 12: matches() needs a string literal as its pattern (it is compiled once, "
            "at compile time)");
  EXPECT_EQ(CompileError("matches(a, '(')"),
            "position 12: invalid regular expression: missing ): (");
  EXPECT_EQ(CompileError("exists('a')"),
            "position 8: exists() needs a field path as its "
            "argument");
}

TEST(ExpressionTest, LimitsRefuseHostileInput) {
  // Nesting: 64 levels are fine, 65 are refused at compile time (no stack exhaustion).
  const std::string ok_nest = std::string(64, '(') + "1" + std::string(64, ')');
  EXPECT_NE(Expression::Compile(ok_nest).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string deep = std::string(65, '(') + "1" + std::string(65, ')');
  EXPECT_EQ(CompileError(deep), "position 65: expression nested deeper than 64 levels");
  EXPECT_EQ(CompileError(std::string(100, '!') + "true"),
            "position 65: expression nested deeper than 64 levels");
  EXPECT_EQ(CompileError(std::string(100, '-') + "1"),
            "position 65: expression nested deeper than 64 levels");
  std::string calls;
  for (int i = 0; i < 70; ++i) calls += "abs(";
  calls += "1" + std::string(70, ')');
  EXPECT_EQ(CompileError(calls), "position 260: expression nested deeper than 64 levels");
  // A long flat chain stays within the nesting limit (chains are n-ary nodes).
  std::string chain = "1";
  for (int i = 0; i < 1000; ++i) chain += "+1";
  EXPECT_EQ(Eval(chain), "1001");
  std::string ors = "false";
  for (int i = 0; i < 500; ++i) ors += "||false";
  EXPECT_EQ(Eval(ors + "||qty==3"), "true");
  // Length.
  EXPECT_EQ(CompileError(std::string(4097, '1')),
            "position 4097: expression longer than 4096 bytes");
  EXPECT_EQ(CompileError(std::string(1u << 20, '(')),
            "position 4097: expression longer than 4096 bytes");
}

TEST(ExpressionTest, ValueConversionsForSet) {
  rapidjson::Document doc = Parse(kRecord);
  rapidjson::Document out(rapidjson::kObjectType);
  auto to_json = [&](const std::string& text) {
    std::shared_ptr<const Expression> e = MustCompile(text);
    absl::StatusOr<ExprValue> v = e->Evaluate(doc);
    EXPECT_TRUE(v.ok()) << v.status();
    return v->ToJson(out.GetAllocator());
  };
  rapidjson::Value v = to_json("items[1]");
  ASSERT_TRUE(v.IsObject());
  EXPECT_STREQ(v["sku"].GetString(), "B2");
  // A deep copy: changing the source does not change the copy.
  doc["items"][1]["sku"].SetString("changed");
  EXPECT_STREQ(v["sku"].GetString(), "B2");
  EXPECT_TRUE(to_json("qty * 2").IsInt64());
  EXPECT_EQ(to_json("qty * 2").GetInt64(), 6);
  EXPECT_DOUBLE_EQ(to_json("amount / 2").GetDouble(), 6.25);
  EXPECT_STREQ(to_json("lower(country)").GetString(), "de");
  EXPECT_TRUE(to_json("missing").IsNull());
  EXPECT_TRUE(to_json("flag").GetBool());

  EXPECT_EQ(ExprValue::Double(3.0).type(), ExprValue::Type::kNumber);
  EXPECT_TRUE(ExprValue::Double(3.0).is_int());
  EXPECT_TRUE(ExprValue::Double(-0.0).is_int());
  EXPECT_TRUE(ExprValue::Double(1e19).is_double());
  EXPECT_EQ(ExprValue::Int(1), ExprValue::Double(1.0));
  EXPECT_FALSE(ExprValue::Int(1) == ExprValue::String("1"));
  EXPECT_EQ(ExprValue::FromJson(doc["items"]).TypeName(), "array");
  EXPECT_EQ(ExprValue::FromJson(doc["customer"]).TypeName(), "object");
  EXPECT_EQ(ExprValue::String("a\"b").ToJsonText(), "\"a\\\"b\"");
}

TEST(ExpressionTest, TextAndNonObjectRecords) {
  std::shared_ptr<const Expression> e = MustCompile("  qty > 1 ");
  EXPECT_EQ(e->text(), "  qty > 1 ");
  // Evaluating against a non-object: fields are simply absent.
  rapidjson::Document arr = Parse("[1,2]");
  absl::StatusOr<ExprValue> v = e->Evaluate(arr);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->is_null());
  EXPECT_EQ(Eval("len($)", "[1,2,3]"), "3");
}

TEST(ExpressionTest, ConcurrentEvaluationIsSafe) {
  std::shared_ptr<const Expression> e =
      MustCompile("matches(customer.email, '@example\\\\.com$') && qty * 2 == 6");
  ASSERT_NE(e, nullptr);
  std::vector<std::thread> threads;
  std::vector<int> passed(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      rapidjson::Document doc = Parse(R"({"customer": {"email": "a@example.com"}, "qty": 3})");
      for (int i = 0; i < 2000; ++i) {
        absl::StatusOr<bool> r = e->EvaluateBool(doc);
        if (r.ok() && *r) ++passed[t];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int p : passed) EXPECT_EQ(p, 2000);
}

}  // namespace
}  // namespace wharf::pipeline::contract
