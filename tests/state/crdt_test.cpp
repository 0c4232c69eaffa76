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
    // Wrong version is "unsupported".
    std::string v2 = doc;
    v2[1] = 2;
    auto r = Document::decode(v2, 1);
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

}  // namespace
}  // namespace assistd::state::crdt
