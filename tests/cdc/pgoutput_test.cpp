#include "cdc/pgoutput.h"

#include <gtest/gtest.h>

namespace assistd::cdc::pg {
namespace {

// A big-endian message builder, as the server writes them.
struct Bytes {
    std::string s;
    Bytes& c(char v) {
        s.push_back(v);
        return *this;
    }
    Bytes& u(uint64_t v, int n) {
        for (int i = n - 1; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
        return *this;
    }
    Bytes& str(const std::string& v) {
        s += v;
        s.push_back('\0');
        return *this;
    }
    Bytes& text(const std::string& v) {
        c('t').u(v.size(), 4);
        s += v;
        return *this;
    }
};

TEST(Pgoutput, LsnsPrintAndParseAsPostgresWritesThem) {
    EXPECT_EQ(format_lsn(0x16B374D848ull), "16/B374D848");
    EXPECT_EQ(parse_lsn("16/B374D848"), 0x16B374D848ull);
    EXPECT_EQ(parse_lsn("0/0"), 0u);
    for (const char* bad : {"", "/", "1/", "/1", "12", "g/1", "1/123456789", "123456789/1", "1/-1"})
        EXPECT_FALSE(parse_lsn(bad)) << bad;
}

TEST(Pgoutput, ATransactionDecodesMessageByMessage) {
    auto begin = decode_message(Bytes().c('B').u(0x100, 8).u(5, 8).u(77, 4).s);
    ASSERT_TRUE(begin.ok());
    EXPECT_EQ(std::get<Begin>(*begin).xid, 77u);

    Bytes rel;
    rel.c('R').u(16384, 4).str("public").str("trades").c('d').u(3, 2);
    rel.c(1).str("id").u(20, 4).u(0xffffffff, 4);
    rel.c(0).str("qty").u(1700, 4).u(0x000c0006, 4);
    rel.c(0).str("note").u(25, 4).u(0xffffffff, 4);
    auto r = decode_message(rel.s);
    ASSERT_TRUE(r.ok()) << r.error().message;
    const auto& relation = std::get<Relation>(*r);
    EXPECT_EQ(relation.name, "trades");
    ASSERT_EQ(relation.columns.size(), 3u);
    EXPECT_TRUE(relation.columns[0].key);
    EXPECT_FALSE(relation.columns[1].key);
    EXPECT_EQ(relation.columns[1].type_oid, 1700u);

    Bytes ins;
    ins.c('I').u(16384, 4).c('N').u(3, 2).text("10").text("100.25").c('n');
    auto i = decode_message(ins.s);
    ASSERT_TRUE(i.ok()) << i.error().message;
    const auto& row = std::get<Insert>(*i).row;
    ASSERT_EQ(row.size(), 3u);
    EXPECT_EQ(row[1].text, "100.25");
    EXPECT_EQ(row[2].kind, TupleValue::Kind::kNull);

    Bytes up;
    up.c('U').u(16384, 4).c('K').u(3, 2).text("9").c('n').c('n').c('N').u(3, 2).text("10").text("1").c('u');
    auto u = decode_message(up.s);
    ASSERT_TRUE(u.ok()) << u.error().message;
    EXPECT_EQ(std::get<Update>(*u).old_kind, 'K');
    EXPECT_EQ(std::get<Update>(*u).old_row[0].text, "9");
    EXPECT_EQ(std::get<Update>(*u).row[2].kind, TupleValue::Kind::kUnchangedToast);

    Bytes plain_update;
    plain_update.c('U').u(16384, 4).c('N').u(1, 2).text("10");
    auto pu = decode_message(plain_update.s);
    ASSERT_TRUE(pu.ok());
    EXPECT_EQ(std::get<Update>(*pu).old_kind, 0);

    Bytes del;
    del.c('D').u(16384, 4).c('K').u(1, 2).text("10");
    ASSERT_TRUE(decode_message(del.s).ok());

    Bytes trunc;
    trunc.c('T').u(2, 4).c(0).u(16384, 4).u(16390, 4);
    auto t = decode_message(trunc.s);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(std::get<Truncate>(*t).relations.size(), 2u);

    auto commit = decode_message(Bytes().c('C').c(0).u(0x100, 8).u(0x180, 8).u(5, 8).s);
    ASSERT_TRUE(commit.ok());
    EXPECT_EQ(std::get<Commit>(*commit).end_lsn, 0x180u);

    EXPECT_TRUE(std::holds_alternative<Other>(*decode_message(Bytes().c('O').u(1, 8).str("origin").s)));
}

TEST(Pgoutput, MalformedMessagesAreErrorsNeverCrashes) {
    Bytes ins;
    ins.c('I').u(16384, 4).c('N').u(2, 2).text("10").text("100.25");
    for (size_t cut = 0; cut < ins.s.size(); ++cut) EXPECT_FALSE(decode_message(ins.s.substr(0, cut)).ok()) << cut;
    EXPECT_FALSE(decode_message(ins.s + "x").ok()) << "trailing bytes";
    Bytes huge;
    huge.c('I').u(1, 4).c('N').u(1, 2).c('t').u(0xfffffff0, 4).s += "abc";
    EXPECT_FALSE(decode_message(huge.s).ok()) << "a length past the end";
    EXPECT_FALSE(decode_message(Bytes().c('I').u(1, 4).c('X').u(0, 2).s).ok()) << "not 'N'";
    EXPECT_FALSE(decode_message(Bytes().c('I').u(1, 4).c('N').u(1, 2).c('b').s).ok()) << "binary values";
    EXPECT_FALSE(decode_message(Bytes().c('R').u(1, 4).str("public").s).ok()) << "a Relation cut short";
    EXPECT_FALSE(decode_message(Bytes().c('T').u(0xffffffff, 4).c(0).s).ok()) << "a Truncate of 4G relations";
    EXPECT_FALSE(decode_message(Bytes().c('D').u(1, 4).c('N').u(0, 2).s).ok()) << "a Delete without its old row";
    EXPECT_FALSE(decode_message(Bytes().c('Z').s).ok()) << "an unknown message";
    EXPECT_FALSE(decode_message("").ok());
}

TEST(Pgoutput, CopyDataFramesAndTheStandbyStatus) {
    Bytes w;
    w.c('w').u(0x10, 8).u(0x20, 8).u(99, 8).s += "BODY";
    auto x = decode_copy_data(w.s);
    ASSERT_TRUE(x.ok());
    EXPECT_EQ(std::get<XLogData>(*x).wal_end, 0x20u);
    EXPECT_EQ(std::get<XLogData>(*x).payload, "BODY");
    auto k = decode_copy_data(Bytes().c('k').u(0x30, 8).u(1, 8).c(1).s);
    ASSERT_TRUE(k.ok());
    EXPECT_TRUE(std::get<Keepalive>(*k).reply_requested);
    EXPECT_FALSE(decode_copy_data(Bytes().c('k').u(0x30, 8).s).ok());
    EXPECT_FALSE(decode_copy_data(Bytes().c('w').u(1, 8).s).ok());
    EXPECT_FALSE(decode_copy_data("q").ok());
    const std::string r = encode_standby_status(0x40, 0x30, 0x30, 5, false);
    ASSERT_EQ(r.size(), 34u);
    EXPECT_EQ(r[0], 'r');
    EXPECT_EQ(static_cast<uint8_t>(r[8]), 0x40);
    EXPECT_EQ(static_cast<uint8_t>(r[16]), 0x30);
}

}  // namespace
}  // namespace assistd::cdc::pg
