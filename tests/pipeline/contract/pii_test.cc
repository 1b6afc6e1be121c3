#include "pipeline/contract/pii.h"

#include <gtest/gtest.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string>
#include <vector>

#include "pipeline/contract/hmac.h"

namespace wharf::pipeline::contract {
namespace {

using wharf::v1::PiiAction;
using wharf::v1::PiiDetector;

std::vector<std::string> Found(PiiDetector d, const std::string& text, bool named = false) {
  std::vector<std::string> out;
  for (const PiiScanner::Match& m : PiiScanner::Detect(d, text, named)) {
    out.push_back(text.substr(m.begin, m.end - m.begin));
  }
  return out;
}

using Strings = std::vector<std::string>;

rapidjson::Document Parse(const std::string& json) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());
  EXPECT_FALSE(doc.HasParseError()) << json;
  return doc;
}

std::string Dump(const rapidjson::Value& v) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  v.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

wharf::v1::PiiSpec Spec(PiiDetector d, PiiAction a, std::vector<std::string> fields = {}) {
  wharf::v1::PiiSpec spec;
  spec.set_detector(d);
  spec.set_action(a);
  for (auto& f : fields) spec.add_fields(f);
  return spec;
}

std::shared_ptr<const PiiScanner> Compile(std::vector<wharf::v1::PiiSpec> specs,
                                          std::string key = "k") {
  google::protobuf::RepeatedPtrField<wharf::v1::PiiSpec> repeated;
  for (auto& s : specs) *repeated.Add() = s;
  auto scanner = PiiScanner::Compile(repeated, key);
  EXPECT_TRUE(scanner.ok()) << scanner.status();
  return scanner.ok() ? *scanner : nullptr;
}

// Applies `specs` to `json`; returns the result and the record afterwards.
std::pair<PiiScanner::Result, std::string> RunSpecs(std::vector<wharf::v1::PiiSpec> specs,
                                                    const std::string& json,
                                                    PiiFinding* finding = nullptr) {
  auto scanner = Compile(std::move(specs));
  if (scanner == nullptr) return {PiiScanner::Result::kClean, ""};
  rapidjson::Document doc = Parse(json);
  PiiScanner::Result r = scanner->Apply(&doc, finding);
  return {r, Dump(doc)};
}

// --- detectors ---

TEST(PiiEmailTest, FindsAddressesInsideText) {
  EXPECT_EQ(Found(wharf::v1::PII_EMAIL, "mail john.doe+tag@example.co.uk, or a@b.io."),
            (Strings{"john.doe+tag@example.co.uk", "a@b.io"}));
  EXPECT_EQ(Found(wharf::v1::PII_EMAIL, "<x_y%z@sub-domain.example.org>"),
            (Strings{"x_y%z@sub-domain.example.org"}));
  EXPECT_EQ(Found(wharf::v1::PII_EMAIL, "Grüße an ana@example.de!"), (Strings{"ana@example.de"}));
}

TEST(PiiEmailTest, RejectsNonAddresses) {
  EXPECT_TRUE(Found(wharf::v1::PII_EMAIL, "user@localhost").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_EMAIL, "john@ and @example.com").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_EMAIL, "foo@bar.c").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_EMAIL, "a@b.com1").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_EMAIL, "a@-bad.com").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_EMAIL, std::string(65, 'a') + "@example.com").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_EMAIL, "").empty());
}

TEST(PiiPhoneTest, FindsCommonFormats) {
  EXPECT_EQ(Found(wharf::v1::PII_PHONE, "call +4915112345678 now"), (Strings{"+4915112345678"}));
  EXPECT_EQ(Found(wharf::v1::PII_PHONE, "US: +1 (555) 123-4567."), (Strings{"+1 (555) 123-4567"}));
  EXPECT_EQ(Found(wharf::v1::PII_PHONE, "(555) 123-4567"), (Strings{"(555) 123-4567"}));
  EXPECT_EQ(Found(wharf::v1::PII_PHONE, "Tel. 030 1234567"), (Strings{"030 1234567"}));
  EXPECT_EQ(Found(wharf::v1::PII_PHONE, "555-123-4567 or +49 (0)30 12345678"),
            (Strings{"555-123-4567", "+49 (0)30 12345678"}));
}

TEST(PiiPhoneTest, RejectsDatesShortNumbersCardsAndDecimals) {
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "on 2024-01-15 at 10:30").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "2024-01-15 10:30:00").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "15-01-2024").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "2024-01-15T10:30:00Z").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "order 1234567 and 42").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "+49 123").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "4111 1111 1111 1111").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "4111-1111-1111-1111").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "3782 822463 10005").empty());  // Amex, 15 digits
  EXPECT_EQ(Found(wharf::v1::PII_PHONE, "3782 822463 10005", /*named=*/true).size(), 1u);
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "123-45-6789").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "pi 3.14159265 ip 10.0.0.123").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "1 2 3 4 5 6 7").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "+12345678901234567").empty());  // 17 digits
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "id5551234567").empty());
}

TEST(PiiPhoneTest, PlainDigitRunsOnlyInNamedFields) {
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "15112345678").empty());
  EXPECT_EQ(Found(wharf::v1::PII_PHONE, "15112345678", /*named=*/true), (Strings{"15112345678"}));
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, "123456", /*named=*/true).empty());
}

TEST(PiiCardTest, LuhnValidNumbersInAnyGrouping) {
  EXPECT_EQ(Found(wharf::v1::PII_PAYMENT_CARD, "card 4111111111111111 exp 12/30"),
            (Strings{"4111111111111111"}));
  EXPECT_EQ(Found(wharf::v1::PII_PAYMENT_CARD, "5500 0000 0000 0004"),
            (Strings{"5500 0000 0000 0004"}));
  EXPECT_EQ(Found(wharf::v1::PII_PAYMENT_CARD, "amex 3782-822463-10005;"),
            (Strings{"3782-822463-10005"}));
  EXPECT_EQ(Found(wharf::v1::PII_PAYMENT_CARD, "6011111111111117"), (Strings{"6011111111111117"}));
  // A separate number after the card does not hide it.
  EXPECT_EQ(Found(wharf::v1::PII_PAYMENT_CARD, "4111 1111 1111 1111 2 times"),
            (Strings{"4111 1111 1111 1111"}));
}

TEST(PiiCardTest, RejectsLuhnFailuresAndNonCards) {
  EXPECT_TRUE(Found(wharf::v1::PII_PAYMENT_CARD, "4111111111111112").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PAYMENT_CARD, "5500 0000 0000 0005").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PAYMENT_CARD, "0000000000000000").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PAYMENT_CARD, "4444444444444444").empty());   // one digit
  EXPECT_TRUE(Found(wharf::v1::PII_PAYMENT_CARD, "1700000000000").empty());      // epoch millis
  EXPECT_TRUE(Found(wharf::v1::PII_PAYMENT_CARD, "41111111111111110").empty());  // 17, no Luhn
  EXPECT_TRUE(Found(wharf::v1::PII_PAYMENT_CARD, "x4111111111111111").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PAYMENT_CARD, "4111 1111-1111 1111").empty());  // mixed
  EXPECT_TRUE(Found(wharf::v1::PII_PAYMENT_CARD, "41 11 11 11 11 11 11 11").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_PAYMENT_CARD, "+4111111111111111").empty());
}

TEST(PiiIbanTest, ValidChecksumsCompactAndGrouped) {
  EXPECT_EQ(Found(wharf::v1::PII_IBAN, "IBAN DE89 3704 0044 0532 0130 00 bitte"),
            (Strings{"DE89 3704 0044 0532 0130 00"}));
  EXPECT_EQ(Found(wharf::v1::PII_IBAN, "DE89370400440532013000"),
            (Strings{"DE89370400440532013000"}));
  EXPECT_EQ(Found(wharf::v1::PII_IBAN, "GB82 WEST 1234 5698 7654 32"),
            (Strings{"GB82 WEST 1234 5698 7654 32"}));
  EXPECT_EQ(Found(wharf::v1::PII_IBAN, "nl91abna0417164300"), (Strings{"nl91abna0417164300"}));
  EXPECT_EQ(Found(wharf::v1::PII_IBAN, "FR14 2004 1010 0505 0001 3M02 606."),
            (Strings{"FR14 2004 1010 0505 0001 3M02 606"}));
}

TEST(PiiIbanTest, RejectsBadChecksumLengthAndSpacing) {
  EXPECT_TRUE(Found(wharf::v1::PII_IBAN, "DE89 3704 0044 0532 0130 01").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IBAN, "DE88370400440532013000").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IBAN, "DE8937040044053201300").empty());  // 21 chars
  EXPECT_TRUE(Found(wharf::v1::PII_IBAN, "DE89 37040044 0532 0130 00").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IBAN, "XDE89370400440532013000").empty());
}

TEST(PiiSsnTest, DashedFormOutsideInvalidRanges) {
  EXPECT_EQ(Found(wharf::v1::PII_US_SSN, "ssn 123-45-6789."), (Strings{"123-45-6789"}));
  EXPECT_EQ(Found(wharf::v1::PII_US_SSN, "665-01-0001"), (Strings{"665-01-0001"}));
  for (const char* invalid : {"000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456",
                              "123-00-4567", "123-45-0000", "078-05-1120", "219-09-9999"}) {
    EXPECT_TRUE(Found(wharf::v1::PII_US_SSN, invalid).empty()) << invalid;
    EXPECT_TRUE(Found(wharf::v1::PII_US_SSN, invalid, /*named=*/true).empty()) << invalid;
  }
  EXPECT_TRUE(Found(wharf::v1::PII_US_SSN, "1123-45-6789").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_US_SSN, "123-45-6789-1").empty());
}

TEST(PiiSsnTest, NineDigitsOnlyInNamedFields) {
  EXPECT_TRUE(Found(wharf::v1::PII_US_SSN, "123456789").empty());
  EXPECT_EQ(Found(wharf::v1::PII_US_SSN, "123456789", /*named=*/true), (Strings{"123456789"}));
  EXPECT_TRUE(Found(wharf::v1::PII_US_SSN, "666456789", /*named=*/true).empty());
  EXPECT_TRUE(Found(wharf::v1::PII_US_SSN, "1234567890", /*named=*/true).empty());
}

TEST(PiiIpTest, Ipv4) {
  EXPECT_EQ(Found(wharf::v1::PII_IP_ADDRESS, "from 10.0.0.1:8080 and 192.168.1.255."),
            (Strings{"10.0.0.1", "192.168.1.255"}));
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "256.1.1.1").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "version 1.2.3.4.5").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "01.2.3.4").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "1.2.3").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "v1.2.3.4").empty());
}

TEST(PiiIpTest, Ipv6Forms) {
  EXPECT_EQ(Found(wharf::v1::PII_IP_ADDRESS, "2001:0db8:0000:0000:0000:ff00:0042:8329"),
            (Strings{"2001:0db8:0000:0000:0000:ff00:0042:8329"}));
  EXPECT_EQ(Found(wharf::v1::PII_IP_ADDRESS, "host 2001:db8::1, lo ::1"),
            (Strings{"2001:db8::1", "::1"}));
  EXPECT_EQ(Found(wharf::v1::PII_IP_ADDRESS, "fe80::1ff:fe23:4567:890a: up"),
            (Strings{"fe80::1ff:fe23:4567:890a"}));
  EXPECT_EQ(Found(wharf::v1::PII_IP_ADDRESS, "[::ffff:192.0.2.1]"), (Strings{"::ffff:192.0.2.1"}));
  EXPECT_EQ(Found(wharf::v1::PII_IP_ADDRESS, "1::"), (Strings{"1::"}));
}

TEST(PiiIpTest, RejectsIpv6LookAlikes) {
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "std::string and Foo::bar").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "at 10:30:00").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "mac 00:1a:2b:3c:4d:5e").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "2001:db8:::1").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "a :: b").empty());
  EXPECT_TRUE(Found(wharf::v1::PII_IP_ADDRESS, "1:2:3:4:5:6:7:8:9").empty());
}

TEST(PiiDetectTest, LongAndHostileInputStaysLinearAndSafe) {
  // Long runs that almost match: must finish quickly and find nothing.
  std::string digits(200000, '1');
  std::string dotted;
  for (int i = 0; i < 50000; ++i) dotted += "1.";
  std::string invalid_utf8 = "\xff\xfe a@b.io \xc3";
  for (PiiDetector d : {wharf::v1::PII_EMAIL, wharf::v1::PII_PHONE, wharf::v1::PII_PAYMENT_CARD,
                        wharf::v1::PII_IBAN, wharf::v1::PII_US_SSN, wharf::v1::PII_IP_ADDRESS}) {
    EXPECT_TRUE(Found(d, digits).empty()) << PiiScanner::DetectorName(d);
    EXPECT_TRUE(Found(d, dotted).empty()) << PiiScanner::DetectorName(d);
  }
  EXPECT_EQ(Found(wharf::v1::PII_EMAIL, invalid_utf8), (Strings{"a@b.io"}));
}

TEST(PiiDetectTest, DetectorNames) {
  EXPECT_EQ(PiiScanner::DetectorName(wharf::v1::PII_EMAIL), "email");
  EXPECT_EQ(PiiScanner::DetectorName(wharf::v1::PII_PHONE), "phone");
  EXPECT_EQ(PiiScanner::DetectorName(wharf::v1::PII_PAYMENT_CARD), "payment_card");
  EXPECT_EQ(PiiScanner::DetectorName(wharf::v1::PII_IBAN), "iban");
  EXPECT_EQ(PiiScanner::DetectorName(wharf::v1::PII_US_SSN), "us_ssn");
  EXPECT_EQ(PiiScanner::DetectorName(wharf::v1::PII_IP_ADDRESS), "ip_address");
  EXPECT_EQ(PiiScanner::DetectorName(wharf::v1::PII_DETECTOR_UNSPECIFIED), "unspecified");
}

// --- actions ---

TEST(PiiActionTest, MaskKeepsTheRestOfTheString) {
  auto [r, out] = RunSpecs({Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_MASK)},
                           R"({"note":"Grüße, schreib an ana@example.de bitte","n":1})");
  EXPECT_EQ(r, PiiScanner::Result::kModified);
  EXPECT_EQ(out, R"({"note":"Grüße, schreib an ************** bitte","n":1})");
}

TEST(PiiActionTest, HashReplacesEachMatchWithItsHmac) {
  auto [r, out] =
      RunSpecs({Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_HASH)}, R"({"to":"a@b.io; c@d.io"})");
  EXPECT_EQ(r, PiiScanner::Result::kModified);
  EXPECT_EQ(out, "{\"to\":\"" + HmacSha256Hex("k", "a@b.io") + "; " + HmacSha256Hex("k", "c@d.io") +
                     "\"}");
}

// Fuzz finding F6: "+40 44 123 45 67" glued to a digit run is not a phone number, but once the
// run before it is masked it is one; the masked value must not hold anything the detector finds.
TEST(PiiActionTest, MaskScansTheRewrittenValueAgain) {
  const std::string text = "219099999+40 44 123 45 67";
  EXPECT_EQ(Found(wharf::v1::PII_PHONE, text, /*named=*/true), Strings{"219099999"});
  EXPECT_EQ(Found(wharf::v1::PII_PHONE, "*********+40 44 123 45 67", true),
            Strings{"+40 44 123 45 67"});
  auto [r, out] = RunSpecs({Spec(wharf::v1::PII_PHONE, wharf::v1::PII_MASK, {"/phone"})},
                           R"({"phone":")" + text + R"("})");
  EXPECT_EQ(r, PiiScanner::Result::kModified);
  EXPECT_EQ(out, R"({"phone":"*************************"})");
  // The same with hashing: whatever the detector finds in the result is hashed too.
  auto [hr, hashed] = RunSpecs({Spec(wharf::v1::PII_PHONE, wharf::v1::PII_HASH, {"/phone"})},
                               R"({"phone":")" + text + R"("})");
  EXPECT_EQ(hr, PiiScanner::Result::kModified);
  rapidjson::Document doc = Parse(hashed);
  EXPECT_TRUE(Found(wharf::v1::PII_PHONE, doc["phone"].GetString(), true).empty()) << hashed;
}

TEST(PiiActionTest, DropRemovesMembersAndArrayElements) {
  auto [r, out] = RunSpecs({Spec(wharf::v1::PII_PHONE, wharf::v1::PII_DROP)},
                           R"({"a":"x","tel":"+4915112345678","list":["+4915112345678","ok",)"
                           R"("+1 555 123 4567",{"t":"(555) 123-4567","u":1}],"z":2})");
  EXPECT_EQ(r, PiiScanner::Result::kModified);
  EXPECT_EQ(out, R"({"a":"x","list":["ok",{"u":1}],"z":2})");
}

TEST(PiiActionTest, QuarantineReportsDetectorAndPointerNotTheValue) {
  PiiFinding finding;
  auto [r, out] =
      RunSpecs({Spec(wharf::v1::PII_PAYMENT_CARD, wharf::v1::PII_QUARANTINE)},
               R"({"order":{"items":[{"note":"ok"},{"note":"card 4111 1111 1111 1111"}],)"
               R"("a/b~c":"5500000000000004"}})",
               &finding);
  EXPECT_EQ(r, PiiScanner::Result::kQuarantine);
  EXPECT_EQ(finding.detector, wharf::v1::PII_PAYMENT_CARD);
  EXPECT_EQ(finding.pointer, "/order/items/1/note");
  EXPECT_EQ(finding.pointer.find("4111"), std::string::npos);
}

TEST(PiiActionTest, QuarantineEscapesPointerTokensAndAcceptsNullFinding) {
  PiiFinding finding;
  auto [r, out] = RunSpecs({Spec(wharf::v1::PII_PAYMENT_CARD, wharf::v1::PII_QUARANTINE)},
                           R"({"a/b~c":"5500000000000004"})", &finding);
  EXPECT_EQ(r, PiiScanner::Result::kQuarantine);
  EXPECT_EQ(finding.pointer, "/a~1b~0c");
  auto [r2, out2] = RunSpecs({Spec(wharf::v1::PII_PAYMENT_CARD, wharf::v1::PII_QUARANTINE)},
                             R"({"c":"5500000000000004"})", nullptr);
  EXPECT_EQ(r2, PiiScanner::Result::kQuarantine);
}

TEST(PiiActionTest, CleanRecordIsUntouched) {
  const std::string json = R"({"a":"nothing here","b":[1,2,{"c":"2024-01-15"}],"d":null})";
  auto [r, out] = RunSpecs({Spec(wharf::v1::PII_PHONE, wharf::v1::PII_MASK),
                            Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_QUARANTINE)},
                           json);
  EXPECT_EQ(r, PiiScanner::Result::kClean);
  EXPECT_EQ(out, json);
}

TEST(PiiActionTest, SpecsApplyInOrderAndQuarantineWins) {
  // Masking first removes the card before the quarantine spec looks.
  auto [r1, out1] = RunSpecs({Spec(wharf::v1::PII_PAYMENT_CARD, wharf::v1::PII_MASK),
                              Spec(wharf::v1::PII_PAYMENT_CARD, wharf::v1::PII_QUARANTINE)},
                             R"({"c":"4111111111111111"})");
  EXPECT_EQ(r1, PiiScanner::Result::kModified);
  EXPECT_EQ(out1, R"({"c":"****************"})");
  PiiFinding finding;
  auto [r2, out2] = RunSpecs({Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_MASK),
                              Spec(wharf::v1::PII_IP_ADDRESS, wharf::v1::PII_QUARANTINE)},
                             R"({"m":"a@b.io","ip":"10.1.2.3"})", &finding);
  EXPECT_EQ(r2, PiiScanner::Result::kQuarantine);
  EXPECT_EQ(finding.detector, wharf::v1::PII_IP_ADDRESS);
  EXPECT_EQ(finding.pointer, "/ip");
}

// --- scope ---

TEST(PiiScopeTest, FieldsLimitTheScanAndScanBeneathContainers) {
  const std::string json =
      R"({"user":{"mail":"a@b.io","tags":["c@d.io"]},"other":"e@f.io","x":{"m":"g@h.io"}})";
  auto [r, out] =
      RunSpecs({Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_MASK, {"/user", "/missing"})}, json);
  EXPECT_EQ(r, PiiScanner::Result::kModified);
  EXPECT_EQ(out,
            R"({"user":{"mail":"******","tags":["******"]},"other":"e@f.io","x":{"m":"g@h.io"}})");
}

TEST(PiiScopeTest, EmptyFieldsScanEveryValueButNotKeys) {
  auto [r, out] = RunSpecs({Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_MASK)},
                           R"({"a@b.io":"x","deep":[[{"k":["c@d.io"]}]],"n":12})");
  EXPECT_EQ(r, PiiScanner::Result::kModified);
  EXPECT_EQ(out, R"({"a@b.io":"x","deep":[[{"k":["******"]}]],"n":12})");
}

TEST(PiiScopeTest, NumbersAreScannedOnlyInNamedFields) {
  const std::string json = R"({"phone":4915112345678,"ssn":123456789,"id":4915112345678})";
  auto [r, out] = RunSpecs({Spec(wharf::v1::PII_PHONE, wharf::v1::PII_MASK, {"/phone"}),
                            Spec(wharf::v1::PII_US_SSN, wharf::v1::PII_HASH, {"/ssn"})},
                           json);
  EXPECT_EQ(r, PiiScanner::Result::kModified);
  EXPECT_EQ(out, "{\"phone\":\"*************\",\"ssn\":\"" + HmacSha256Hex("k", "123456789") +
                     "\",\"id\":4915112345678}");
  auto [r2, out2] = RunSpecs({Spec(wharf::v1::PII_PHONE, wharf::v1::PII_MASK)}, json);
  EXPECT_EQ(r2, PiiScanner::Result::kClean);
}

TEST(PiiScopeTest, NamedArrayElementsAreNamed) {
  auto [r, out] = RunSpecs({Spec(wharf::v1::PII_PHONE, wharf::v1::PII_DROP, {"/phones"})},
                           R"({"phones":["15112345678",4915112345678,"none"],"p":"15112345678"})");
  EXPECT_EQ(r, PiiScanner::Result::kModified);
  EXPECT_EQ(out, R"({"phones":["none"],"p":"15112345678"})");
}

TEST(PiiScopeTest, RootPointerAndOverlappingPointersActOnce) {
  auto [r, out] =
      RunSpecs({Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_HASH, {"", "/a"})}, R"({"a":"x@y.io"})");
  EXPECT_EQ(r, PiiScanner::Result::kModified);
  EXPECT_EQ(out, "{\"a\":\"" + HmacSha256Hex("k", "x@y.io") + "\"}");
}

TEST(PiiScopeTest, DeeplyNestedRecord) {
  std::string json;
  for (int i = 0; i < 20000; ++i) json += "[";
  json += "\"a@b.io\"";
  for (int i = 0; i < 20000; ++i) json += "]";
  auto scanner = Compile({Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_MASK)});
  ASSERT_NE(scanner, nullptr);
  rapidjson::Document doc = Parse(json);
  EXPECT_EQ(scanner->Apply(&doc, nullptr), PiiScanner::Result::kModified);
  const rapidjson::Value* v = &doc;
  while (v->IsArray() && v->Size() == 1) v = &(*v)[0];
  ASSERT_TRUE(v->IsString());
  EXPECT_EQ(std::string(v->GetString()), "******");
}

// --- compile ---

TEST(PiiCompileTest, ListsEveryProblem) {
  google::protobuf::RepeatedPtrField<wharf::v1::PiiSpec> specs;
  *specs.Add() = Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_MASK, {"/ok"});
  *specs.Add() = Spec(wharf::v1::PII_DETECTOR_UNSPECIFIED, wharf::v1::PII_MASK);
  *specs.Add() = Spec(wharf::v1::PII_PHONE, wharf::v1::PII_ACTION_UNSPECIFIED);
  *specs.Add() = Spec(wharf::v1::PII_IBAN, wharf::v1::PII_DROP, {"no-slash", "/a/~2"});
  *specs.Add() = Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_HASH);
  auto bad = Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_MASK);
  bad.set_detector(static_cast<PiiDetector>(77));
  *specs.Add() = bad;
  auto scanner = PiiScanner::Compile(specs, "");
  ASSERT_FALSE(scanner.ok());
  EXPECT_EQ(scanner.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(scanner.status().message());
  EXPECT_EQ(msg.find("pii[0]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pii[1]: detector"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pii[2]: action"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pii[3]: fields[0] \"no-slash\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("pii[3]: fields[1] \"/a/~2\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("pii[4]: action hash needs a hash key"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pii[5]: detector"), std::string::npos) << msg;
}

TEST(PiiCompileTest, EmptySpecsAndHashWithKey) {
  google::protobuf::RepeatedPtrField<wharf::v1::PiiSpec> specs;
  auto empty = PiiScanner::Compile(specs, "");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE((*empty)->empty());
  *specs.Add() = Spec(wharf::v1::PII_EMAIL, wharf::v1::PII_HASH, {""});
  auto hashing = PiiScanner::Compile(specs, "key");
  ASSERT_TRUE(hashing.ok()) << hashing.status();
  EXPECT_FALSE((*hashing)->empty());
}

}  // namespace
}  // namespace wharf::pipeline::contract
