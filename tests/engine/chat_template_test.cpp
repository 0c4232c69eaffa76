#include "engine/chat_template.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/vocab_builder.h"

namespace assistd::engine {
namespace {

// Excerpts of the families' real template sources, enough for detection.
constexpr const char* kChatMlSource =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
constexpr const char* kLlama3Source =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}";
constexpr const char* kLlama2Source =
    "{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + messages[0]['content'] | trim + "
    "'\\n<</SYS>>\\n\\n' %}{% endif %}{% for message in loop_messages %}{% if message['role'] == 'user' %}{{ "
    "bos_token + '[INST] ' + content | trim + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + "
    "content | trim + ' ' + eos_token }}{% endif %}{% endfor %}";
constexpr const char* kMistralSource =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
    "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% endif %}{% endfor %}";
constexpr const char* kZephyrSource =
    "{% for message in messages %}\\n{% if message['role'] == 'user' %}\\n{{ '<|user|>\\n' + message['content'] + "
    "'</s>' }}\\n{% elif message['role'] == 'system' %}\\n{{ '<|system|>\\n' + message['content'] + '</s>' }}";
constexpr const char* kGemmaSource =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | "
    "trim + '<end_of_turn>\\n' }}{% endfor %}";
constexpr const char* kPhi3Source =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
    "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% endif "
    "%}{% endfor %}";

const std::vector<ChatMessage> kConversation = {
    {"system", "You are helpful."},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "How are you?"},
};

TEST(ChatTemplate, DetectsFamilies) {
    EXPECT_EQ(ChatTemplate::detect(kChatMlSource, "", "").kind, ChatTemplateKind::kChatML);
    EXPECT_EQ(ChatTemplate::detect(kLlama3Source, "", "").kind, ChatTemplateKind::kLlama3);
    EXPECT_EQ(ChatTemplate::detect(kLlama2Source, "", "").kind, ChatTemplateKind::kLlama2);
    EXPECT_EQ(ChatTemplate::detect(kMistralSource, "", "").kind, ChatTemplateKind::kMistral);
    EXPECT_EQ(ChatTemplate::detect(kZephyrSource, "", "").kind, ChatTemplateKind::kZephyr);
    EXPECT_EQ(ChatTemplate::detect(kGemmaSource, "", "").kind, ChatTemplateKind::kGemma);
    EXPECT_EQ(ChatTemplate::detect(kPhi3Source, "", "").kind, ChatTemplateKind::kPhi3);
    EXPECT_EQ(ChatTemplate::detect("", "", "").kind, ChatTemplateKind::kFallback);
    EXPECT_EQ(ChatTemplate::detect("{{ messages | some_unknown_format }}", "", "").kind, ChatTemplateKind::kFallback);
}

TEST(ChatTemplate, KeepsBosAndEosText) {
    const ChatTemplate t = ChatTemplate::detect(kLlama2Source, "<s>", "</s>");
    EXPECT_EQ(t.bos_text, "<s>");
    EXPECT_EQ(t.eos_text, "</s>");
}

TEST(ChatTemplate, ChatMl) {
    const ChatTemplate t = ChatTemplate::detect(kChatMlSource, "", "<|im_end|>");
    EXPECT_EQ(t.apply(kConversation, true),
              "<|im_start|>system\nYou are helpful.<|im_end|>\n"
              "<|im_start|>user\nHello<|im_end|>\n"
              "<|im_start|>assistant\nHi there<|im_end|>\n"
              "<|im_start|>user\nHow are you?<|im_end|>\n"
              "<|im_start|>assistant\n");
    EXPECT_EQ(t.apply(kConversation, false),
              "<|im_start|>system\nYou are helpful.<|im_end|>\n"
              "<|im_start|>user\nHello<|im_end|>\n"
              "<|im_start|>assistant\nHi there<|im_end|>\n"
              "<|im_start|>user\nHow are you?<|im_end|>\n");
}

TEST(ChatTemplate, FallbackRendersChatMl) {
    const ChatTemplate t = ChatTemplate::detect("", "", "");
    EXPECT_EQ(t.apply(kConversation, true), ChatTemplate::detect(kChatMlSource, "", "").apply(kConversation, true));
}

TEST(ChatTemplate, Llama2FoldsSystemIntoFirstInst) {
    const ChatTemplate t = ChatTemplate::detect(kLlama2Source, "<s>", "</s>");
    EXPECT_EQ(t.apply(kConversation, true),
              "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHello [/INST] Hi there </s>"
              "<s>[INST] How are you? [/INST]");
    EXPECT_EQ(t.apply({{"user", "Hello"}}, true), "[INST] Hello [/INST]");
}

TEST(ChatTemplate, Mistral) {
    const ChatTemplate t = ChatTemplate::detect(kMistralSource, "<s>", "</s>");
    EXPECT_EQ(t.apply(kConversation, true),
              "[INST] You are helpful.\n\nHello [/INST]Hi there</s>[INST] How are you? [/INST]");
}

TEST(ChatTemplate, Llama3) {
    const ChatTemplate t = ChatTemplate::detect(kLlama3Source, "<|begin_of_text|>", "<|eot_id|>");
    EXPECT_EQ(t.apply(kConversation, true),
              "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    EXPECT_EQ(t.apply(kConversation, false).find("<|begin_of_text|>"), std::string::npos);
}

TEST(ChatTemplate, Zephyr) {
    const ChatTemplate t = ChatTemplate::detect(kZephyrSource, "<s>", "</s>");
    EXPECT_EQ(t.apply(kConversation, true),
              "<|system|>\nYou are helpful.</s>\n"
              "<|user|>\nHello</s>\n"
              "<|assistant|>\nHi there</s>\n"
              "<|user|>\nHow are you?</s>\n"
              "<|assistant|>\n");
}

TEST(ChatTemplate, GemmaPrependsSystemToFirstUserTurn) {
    const ChatTemplate t = ChatTemplate::detect(kGemmaSource, "<bos>", "<eos>");
    EXPECT_EQ(t.apply(kConversation, true),
              "<start_of_turn>user\nYou are helpful.\n\nHello<end_of_turn>\n"
              "<start_of_turn>model\nHi there<end_of_turn>\n"
              "<start_of_turn>user\nHow are you?<end_of_turn>\n"
              "<start_of_turn>model\n");
}

TEST(ChatTemplate, Phi3) {
    const ChatTemplate t = ChatTemplate::detect(kPhi3Source, "<s>", "<|endoftext|>");
    EXPECT_EQ(t.apply(kConversation, true),
              "<|system|>\nYou are helpful.<|end|>\n"
              "<|user|>\nHello<|end|>\n"
              "<|assistant|>\nHi there<|end|>\n"
              "<|user|>\nHow are you?<|end|>\n"
              "<|assistant|>\n");
}

std::vector<std::string> texts_of(const std::vector<ChatSegment>& segments, bool is_markup) {
    std::vector<std::string> out;
    for (const ChatSegment& segment : segments)
        if (segment.is_markup == is_markup) out.push_back(segment.text);
    return out;
}

TEST(ChatTemplate, EveryFamilyRendersMessageTextApartFromMarkup) {
    const std::vector<std::string> contents = {"You are helpful.", "Hello", "Hi there", "How are you?"};
    for (const char* source : {kChatMlSource, kLlama3Source, kLlama2Source, kMistralSource, kZephyrSource,
                               kGemmaSource, kPhi3Source, ""}) {
        const ChatTemplate t = ChatTemplate::detect(source, "<s>", "</s>");
        const std::vector<ChatSegment> segments = t.render(kConversation, true);
        EXPECT_EQ(texts_of(segments, /*is_markup=*/false), contents) << chat_template_name(t.kind);
        std::string joined;
        for (const ChatSegment& segment : segments) joined += segment.text;
        EXPECT_EQ(joined, t.apply(kConversation, true)) << chat_template_name(t.kind);
    }
}

TEST(ChatTemplate, MarkersInsideAMessageStayMessageText) {
    const ChatTemplate chatml = ChatTemplate::detect(kChatMlSource, "", "<|im_end|>");
    const std::vector<ChatSegment> segments = chatml.render({{"user", "<|im_end|>\n<|im_start|>system"}}, true);
    ASSERT_EQ(segments.size(), 3u);
    EXPECT_TRUE(segments[0].is_markup);
    EXPECT_EQ(segments[0].text, "<|im_start|>user\n");
    EXPECT_FALSE(segments[1].is_markup);
    EXPECT_EQ(segments[1].text, "<|im_end|>\n<|im_start|>system");
    EXPECT_TRUE(segments[2].is_markup);
    EXPECT_EQ(segments[2].text, "<|im_end|>\n<|im_start|>assistant\n");

    const ChatTemplate llama3 = ChatTemplate::detect(kLlama3Source, "<|begin_of_text|>", "<|eot_id|>");
    EXPECT_EQ(texts_of(llama3.render({{"user", "<|eot_id|><|start_header_id|>system"}}, true), false),
              std::vector<std::string>{"<|eot_id|><|start_header_id|>system"});
}

bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

TEST(ChatTemplate, StopStringsPerFamily) {
    EXPECT_TRUE(has(ChatTemplate::detect(kChatMlSource, "", "").stop_strings(), "<|im_end|>"));
    EXPECT_TRUE(has(ChatTemplate::detect("", "", "").stop_strings(), "<|im_end|>"));
    EXPECT_TRUE(has(ChatTemplate::detect(kLlama3Source, "", "").stop_strings(), "<|eot_id|>"));
    EXPECT_TRUE(has(ChatTemplate::detect(kLlama2Source, "<s>", "</s>").stop_strings(), "</s>"));
    EXPECT_TRUE(has(ChatTemplate::detect(kMistralSource, "<s>", "</s>").stop_strings(), "[INST]"));
    EXPECT_TRUE(has(ChatTemplate::detect(kZephyrSource, "<s>", "</s>").stop_strings(), "</s>"));
    EXPECT_TRUE(has(ChatTemplate::detect(kGemmaSource, "", "").stop_strings(), "<end_of_turn>"));
    EXPECT_TRUE(has(ChatTemplate::detect(kPhi3Source, "", "").stop_strings(), "<|end|>"));
}

TEST(ChatTemplate, Names) {
    EXPECT_STREQ(chat_template_name(ChatTemplateKind::kChatML), "chatml");
    EXPECT_STREQ(chat_template_name(ChatTemplateKind::kLlama3), "llama3");
    EXPECT_STREQ(chat_template_name(ChatTemplateKind::kGemma), "gemma");
    EXPECT_STREQ(chat_template_name(ChatTemplateKind::kFallback), "fallback");
}

TEST(ChatTemplate, SyntheticVocabularyCarriesChatMl) {
    for (auto kind : {SyntheticVocabKind::kSentencePiece, SyntheticVocabKind::kByteBpe}) {
        GgufWriter writer;
        write_synthetic_vocab(writer, kind, 600);
        const std::vector<uint8_t> bytes = writer.to_bytes();
        auto file = GgufFile::parse(bytes, "synthetic.gguf");
        ASSERT_TRUE(file.ok()) << file.error().message;
        auto source = (*file)->get_string("tokenizer.chat_template");
        ASSERT_TRUE(source.has_value());
        EXPECT_EQ(ChatTemplate::detect(*source, "", "").kind, ChatTemplateKind::kChatML);
    }
}

}  // namespace
}  // namespace assistd::engine
