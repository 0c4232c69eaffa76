// Unit tests of the JSON CRDT: containers, merge rules, encoding and decoder robustness.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "state/crdt/change.h"
#include "state/crdt/document.h"
#include "state/crdt/encoding.h"

namespace assistd::state::crdt {
namespace {

void sync(Document& a, Document& b) {
    ASSERT_TRUE(b.apply(a.changes_since(b.version())).ok());
    ASSERT_TRUE(a.apply(b.changes_since(a.version())).ok());
}

std::string from_hex(std::string_view hex) {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
        out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
    return out;
}

// Written by the version-1 encoder (commit ddd888a, before the columnar format).
constexpr std::string_view kVersionOneDocument =
    "dc01032b03000100040100017405030100016c0502010001630504030103000b000d68c3a96c6c6f2077c3b6726c64"
    "25"
    "030e01000403010308030100012c0302030002010207040374776f0503030a0100016b01013d808040000f01030e06"
    "03"
    "01030e0302000520f09f98800401030403010302030001010501011280804001780300000000000004400503030301"
    "00"
    "016b00";
constexpr std::string_view kVersionOneJson =
    R"({"c":3,"k":null,"l":[{"x":2.5},-4,"two"],"t":"éllo, wörld 😀"})";

TEST(Varint, RoundTripsAndRejectsTruncation) {
    Writer w;
    const uint64_t values[] = {0, 1, 127, 128, 300, uint64_t{1} << 35, UINT64_MAX};
    for (uint64_t v : values) w.varint(v);
    w.svarint(-5);
    w.svarint(INT64_MIN);
    std::string bytes = w.take();
    Reader r(bytes);
    for (uint64_t v : values) {
        uint64_t got;
        ASSERT_TRUE(r.varint(got));
        EXPECT_EQ(got, v);
    }
    int64_t s;
    ASSERT_TRUE(r.svarint(s));
    EXPECT_EQ(s, -5);
    ASSERT_TRUE(r.svarint(s));
    EXPECT_EQ(s, INT64_MIN);
    EXPECT_TRUE(r.done());
    Reader truncated(std::string_view(bytes).substr(0, 3));
    uint64_t v;
    truncated.varint(v);
    truncated.varint(v);
    truncated.varint(v);
    EXPECT_FALSE(truncated.varint(v));
    const std::string overlong(11, '\xff');
    Reader bad(overlong);
    EXPECT_FALSE(bad.varint(v));
}

TEST(Text, InsertDeleteAndUnicode) {
    Document d(1);
    auto t = d.map_set_object(d.root(), "t", ObjType::kText);
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(d.text_insert(*t, 0, "hello").ok());
    ASSERT_TRUE(d.text_insert(*t, 5, " wörld 😀").ok());
    EXPECT_EQ(d.text(*t).value(), "hello wörld 😀");
    EXPECT_EQ(d.length(*t).value(), 13u);
    ASSERT_TRUE(d.text_delete(*t, 7, 1).ok());
    EXPECT_EQ(d.text(*t).value(), "hello wrld 😀");
    EXPECT_FALSE(d.text_insert(*t, 99, "x").ok());
    EXPECT_FALSE(d.text_delete(*t, 10, 5).ok());
    EXPECT_FALSE(d.text_insert(*t, 0, "\xff").ok());
}

TEST(Text, ConcurrentRunsAtOnePositionDoNotInterleave) {
    for (uint64_t ra : {1u, 2u}) {
        Document a(ra), b(3 - ra);
        auto t = a.map_set_object(a.root(), "t", ObjType::kText).value();
        ASSERT_TRUE(a.text_insert(t, 0, "[]").ok());
        sync(a, b);
        for (char c : std::string("aaaa")) ASSERT_TRUE(a.text_insert(t, a.length(t).value() - 1, std::string(1, c)).ok());
        for (char c : std::string("bbbb")) ASSERT_TRUE(b.text_insert(t, b.length(t).value() - 1, std::string(1, c)).ok());
        sync(a, b);
        const std::string s = a.text(t).value();
        EXPECT_EQ(s, b.text(t).value());
        EXPECT_TRUE(s == "[aaaabbbb]" || s == "[bbbbaaaa]") << s;
    }
}

TEST(Map, ConcurrentWritesKeepDeterministicWinnerAndExposeConflict) {
    Document a(1), b(2);
    ASSERT_TRUE(a.map_set(a.root(), "k", Value::string("from a")).ok());
    ASSERT_TRUE(b.map_set(b.root(), "k", Value::string("from b")).ok());
    sync(a, b);
    EXPECT_EQ(a.map_get(a.root(), "k").value(), b.map_get(b.root(), "k").value());
    EXPECT_EQ(a.map_get_all(a.root(), "k").size(), 2u);
    // Equal lamports: the larger replica id wins.
    EXPECT_EQ(a.map_get(a.root(), "k").value().s, "from b");
    // A later write that saw both resolves the conflict.
    ASSERT_TRUE(a.map_set(a.root(), "k", Value::integer(7)).ok());
    sync(a, b);
    EXPECT_EQ(b.map_get_all(b.root(), "k").size(), 1u);
    EXPECT_EQ(b.map_get(b.root(), "k").value().i, 7);
    // Delete is observed-remove: a concurrent write survives it.
    ASSERT_TRUE(a.map_delete(a.root(), "k").ok());
    ASSERT_TRUE(b.map_set(b.root(), "k", Value::boolean(true)).ok());
    sync(a, b);
    EXPECT_TRUE(a.map_get(a.root(), "k").value().b);
    EXPECT_EQ(a.encode_state(), b.encode_state());
}

TEST(CounterAndRegister, MergeConcurrentUpdates) {
    Document a(1), b(2);
    auto c = a.map_set_object(a.root(), "c", ObjType::kCounter).value();
    auto r = a.map_set_object(a.root(), "r", ObjType::kRegister).value();
    sync(a, b);
    ASSERT_TRUE(a.counter_add(c, 5).ok());
    ASSERT_TRUE(b.counter_add(c, -2).ok());
    ASSERT_TRUE(a.register_set(r, Value::integer(1)).ok());
    ASSERT_TRUE(b.register_set(r, Value::integer(2)).ok());
    sync(a, b);
    EXPECT_EQ(a.counter_value(c).value(), 3);
    EXPECT_EQ(b.counter_value(c).value(), 3);
    EXPECT_EQ(a.register_get(r).value(), b.register_get(r).value());
    EXPECT_EQ(a.to_json(), b.to_json());
}

TEST(List, NestedObjectsAndJson) {
    Document a(1);
    auto l = a.map_set_object(a.root(), "l", ObjType::kList).value();
    ASSERT_TRUE(a.list_insert(l, 0, Value::integer(1)).ok());
    ASSERT_TRUE(a.list_insert(l, 1, Value::string("two")).ok());
    auto m = a.list_insert_object(l, 2, ObjType::kMap).value();
    ASSERT_TRUE(a.map_set(m, "x", Value::real(1.5)).ok());
    ASSERT_TRUE(a.list_insert(l, 0, Value::null()).ok());
    EXPECT_EQ(a.to_json(), R"({"l":[null,1,"two",{"x":1.5}]})");
    Document b(2);
    ASSERT_TRUE(b.apply(a.changes_since({})).ok());
    EXPECT_EQ(b.to_json(), a.to_json());
    ASSERT_TRUE(b.list_delete(l, 1, 2).ok());
    sync(a, b);
    EXPECT_EQ(a.to_json(), R"({"l":[null,{"x":1.5}]})");
}

TEST(Apply, IdempotentCommutativeAndBuffersOutOfOrderChanges) {
    Document a(1);
    auto t = a.map_set_object(a.root(), "t", ObjType::kText).value();
    std::vector<std::string> deltas;
    VersionVector last;
    for (int i = 0; i < 4; ++i) {
        ASSERT_TRUE(a.text_insert(t, 0, std::string(1, static_cast<char>('a' + i))).ok());
        deltas.push_back(a.changes_since(last));
        last = a.version();
    }
    std::vector<int> order = {0, 1, 2, 3};
    do {
        Document b(2);
        for (int i : order) {
            ASSERT_TRUE(b.apply(deltas[i]).ok());
            ASSERT_TRUE(b.apply(deltas[i]).ok());
        }
        EXPECT_EQ(b.pending_changes(), 0u);
        EXPECT_EQ(b.encode_state(), a.encode_state());
    } while (std::next_permutation(order.begin(), order.end()));
}

TEST(Compaction, DropsStableTombstonesAndStillMerges) {
    Document a(1), b(2);
    auto t = a.map_set_object(a.root(), "t", ObjType::kText).value();
    ASSERT_TRUE(a.text_insert(t, 0, "abcdefgh").ok());
    sync(a, b);
    ASSERT_TRUE(a.text_delete(t, 2, 4).ok());
    sync(a, b);
    // b has not yet written after seeing the delete: not stable at a.
    EXPECT_EQ(a.compact(a.stable_version({1, 2})), 0u);
    ASSERT_TRUE(b.text_insert(t, 2, "X").ok());
    sync(a, b);
    EXPECT_EQ(a.compact(a.stable_version({1, 2})), 4u);
    ASSERT_TRUE(a.text_insert(t, 2, "Y").ok());
    ASSERT_TRUE(b.text_insert(t, 3, "Z").ok());
    sync(a, b);
    b.compact(b.stable_version({1, 2}));
    a.compact(a.stable_version({1, 2}));
    EXPECT_EQ(a.text(t).value(), b.text(t).value());
    EXPECT_EQ(a.encode_state(), b.encode_state());
}

TEST(Encoding, DocumentRoundTripsAndIsCompact) {
    Document a(42);
    auto t = a.map_set_object(a.root(), "t", ObjType::kText).value();
    const std::string text(1000, 'x');
    for (size_t i = 0; i < text.size(); ++i) ASSERT_TRUE(a.text_insert(t, i, std::string(1, text[i])).ok());
    const std::string bytes = a.encode();
    EXPECT_LT(bytes.size(), 1100u);  // one run: ~1 byte per character
    auto b = Document::decode(bytes, 7);
    ASSERT_TRUE(b.ok()) << b.error().message;
    EXPECT_EQ(b->text(t).value(), text);
    EXPECT_EQ(b->encode(), bytes);
}

TEST(Encoding, DecoderRejectsCorruptBytes) {
    Document a(5);
    auto l = a.map_set_object(a.root(), "l", ObjType::kList).value();
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(a.list_insert(l, 0, Value::string(std::to_string(i * 7))).ok());
    const std::string doc = a.encode();
    const std::string delta = a.changes_since({});
    // Every truncation is an error.
    for (size_t n = 0; n < doc.size(); ++n) EXPECT_FALSE(Document::decode(doc.substr(0, n), 1).ok()) << n;
    for (size_t n = 0; n < delta.size(); ++n) {
        Document b(1);
        EXPECT_FALSE(b.apply(delta.substr(0, n)).ok()) << n;
        EXPECT_EQ(b.to_json(), "{}");
    }
    // An unknown version is "unsupported".
    std::string v3 = doc;
    v3[1] = 3;
    auto r = Document::decode(v3, 1);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kUnsupported);
    // Random bit flips never crash (they may or may not decode).
    std::mt19937_64 rng(1);
    for (int i = 0; i < 2000; ++i) {
        std::string m = doc;
        m[rng() % m.size()] ^= static_cast<char>(1 << (rng() % 8));
        auto d = Document::decode(m, 1);
        if (d.ok()) (void)d->to_json();
    }
}

// A plain string is the model: local edits at random places (multi-byte
// characters included, so the UTF-8 arena's offsets are exercised), with a
// second replica editing concurrently and syncing now and then. Long runs of
// local edits between syncs make the id index go stale and be rebuilt; short
// ones replay its update log.
TEST(Text, RandomEditsMatchAStringModelAndMerge) {
    std::mt19937_64 rng(7);
    const std::u32string alphabet = U"ab é€😀\n";
    Document a(1), b(2);
    const ObjId t = a.map_set_object(a.root(), "t", ObjType::kText).value();
    sync(a, b);
    std::u32string model;
    auto to_utf8 = [](const std::u32string& s) {
        std::string out;
        for (char32_t c : s) utf8_append(out, c);
        return out;
    };
    uint64_t cursor = 0;
    for (int round = 0; round < 40; ++round) {
        const int edits = round % 2 ? 3000 : 5;
        cursor = std::min<uint64_t>(cursor, model.size());
        for (int i = 0; i < edits; ++i) {
            if (!model.empty() && rng() % 3 == 0) {
                // Mostly backspace at the cursor, sometimes a delete elsewhere.
                const uint64_t pos = cursor > 0 && rng() % 2 ? cursor - 1 : rng() % model.size();
                const uint64_t n = 1 + rng() % std::min<uint64_t>(5, model.size() - pos);
                ASSERT_TRUE(a.text_delete(t, pos, n).ok());
                model.erase(pos, n);
                cursor = pos;
            } else {
                // Mostly typing on at the cursor, sometimes a jump.
                if (rng() % 4 == 0) cursor = rng() % (model.size() + 1);
                std::u32string s(1 + rng() % 3, U'x');
                for (char32_t& c : s) c = alphabet[rng() % alphabet.size()];
                ASSERT_TRUE(a.text_insert(t, cursor, std::u32string_view(s)).ok());
                model.insert(cursor, s);
                cursor += s.size();
            }
        }
        ASSERT_EQ(a.text(t).value(), to_utf8(model)) << "round " << round;
        // b edits concurrently, then both merge; a's model takes b's edits from the merged text.
        const uint64_t blen = b.length(t).value();
        ASSERT_TRUE(b.text_insert(t, blen / 2, "[b]").ok());
        if (blen > 4) {
            ASSERT_TRUE(b.text_delete(t, 1, 2).ok());
        }
        sync(a, b);
        ASSERT_EQ(a.text(t).value(), b.text(t).value());
        ASSERT_EQ(a.encode_state(), b.encode_state());
        std::u32string merged;
        ASSERT_TRUE(utf8_decode(a.text(t).value(), merged));
        model = merged;
    }
    auto copy = Document::decode(a.encode(), 3);
    ASSERT_TRUE(copy.ok()) << copy.error().message;
    EXPECT_EQ(copy->encode_state(), a.encode_state());
    // Once both have seen everything, compaction drops every tombstone and the text stays.
    a.observe_peer_version(2, b.version());
    b.observe_peer_version(1, a.version());
    a.compact(a.stable_version({1, 2}));
    EXPECT_EQ(a.tombstone_count(), 0u);
    EXPECT_EQ(a.text(t).value(), b.text(t).value());
    ASSERT_TRUE(a.text_insert(t, 3, "ü").ok());
    ASSERT_TRUE(b.text_insert(t, 3, "ö").ok());
    sync(a, b);
    EXPECT_EQ(a.text(t).value(), b.text(t).value());
}

// Every op kind, in many changes from three replicas, survives the columnar
// format: the copy has the same state and encodes to the same bytes.
TEST(Encoding, ColumnarDocumentRoundTripsEveryOpKind) {
    Document a(1), b(7), c(uint64_t{1} << 40);
    auto m = a.map_set_object(a.root(), "m", ObjType::kMap).value();
    auto l = a.map_set_object(a.root(), "l", ObjType::kList).value();
    auto t = a.map_set_object(a.root(), "t", ObjType::kText).value();
    auto n = a.map_set_object(a.root(), "n", ObjType::kCounter).value();
    auto r = a.map_set_object(a.root(), "r", ObjType::kRegister).value();
    sync(a, b);
    sync(b, c);
    for (int i = 0; i < 30; ++i) {
        Document& d = i % 3 == 0 ? a : i % 3 == 1 ? b : c;
        std::string key = "k";
        key += std::to_string(i % 4);
        ASSERT_TRUE(d.map_set(m, key, Value::real(i * 0.5)).ok());
        if (i % 5 == 0) {
            ASSERT_TRUE(d.map_delete(m, "k1").ok());
        }
        ASSERT_TRUE(d.list_insert(l, 0, Value::integer(-i)).ok());
        auto nested = d.list_insert_object(l, 1, ObjType::kMap);
        ASSERT_TRUE(nested.ok());
        std::string value = "v";
        value += std::to_string(i);
        ASSERT_TRUE(d.map_set(*nested, "s", Value::string(value)).ok());
        ASSERT_TRUE(d.text_insert(t, d.length(t).value() / 2, "añ😀").ok());
        if (d.length(t).value() > 3) {
            ASSERT_TRUE(d.text_delete(t, 1, 2).ok());
        }
        ASSERT_TRUE(d.counter_add(n, i % 2 ? -i : i).ok());
        ASSERT_TRUE(d.register_set(r, i % 2 ? Value::boolean(true) : Value::null()).ok());
        d.commit();
        if (i % 4 == 3) {
            sync(a, b);
            sync(b, c);
        }
    }
    sync(a, b);
    sync(b, c);
    sync(a, b);
    const std::string bytes = a.encode();
    ASSERT_EQ(static_cast<uint8_t>(bytes[1]), 2);
    EXPECT_EQ(c.encode(), bytes);  // the same history, the same bytes
    auto copy = Document::decode(bytes, 9);
    ASSERT_TRUE(copy.ok()) << copy.error().message;
    EXPECT_EQ(copy->encode_state(), a.encode_state());
    EXPECT_EQ(copy->to_json(), a.to_json());
    EXPECT_EQ(copy->encode(), bytes);
    // The copy serves deltas others can apply.
    Document e(11);
    ASSERT_TRUE(e.apply(copy->changes_since({})).ok());
    EXPECT_EQ(e.encode_state(), a.encode_state());
    // Every truncation of the deflated form is an error.
    for (size_t k = 0; k < bytes.size(); k += 1 + k / 16)
        EXPECT_FALSE(Document::decode(bytes.substr(0, k), 1).ok()) << k;
}

// Bytes written by the version-1 encoder (before the columnar format): text
// typed by two replicas with a delete, a list, a map, a counter. They still
// decode, and re-encode in version 2 to the same state.
TEST(Encoding, ReadsVersionOneDocuments) {
    const std::string v1 = from_hex(kVersionOneDocument);
    ASSERT_EQ(v1[1], 1);
    auto d = Document::decode(v1, 5);
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(d->to_json(), kVersionOneJson);
    auto again = Document::decode(d->encode(), 6);
    ASSERT_TRUE(again.ok()) << again.error().message;
    EXPECT_EQ(again->encode_state(), d->encode_state());
}

}  // namespace
}  // namespace assistd::state::crdt
