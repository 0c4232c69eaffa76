#pragma once
// Renders a conversation into the prompt text a model was trained on, from
// its tokenizer.chat_template. The common families are recognised by their
// template text (ChatML, Llama 2, Llama 3, Zephyr, Mistral, Gemma, Phi-3);
// an unknown or absent template falls back to ChatML.
//
// Message content is text, never markup: only what the template itself writes
// may become special tokens, so a message that says "<|im_start|>" reaches the
// model as those characters.
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer.h"

namespace assistd::engine {

struct ChatMessage {
    std::string role;  // "system", "user", "assistant": checked by the caller, rendered as markup
    std::string content;
};

// A stretch of a rendered conversation: markup the template wrote (tags, roles,
// BOS/EOS text) or text from a message.
struct ChatSegment {
    std::string text;
    bool is_markup = false;
};

enum class ChatTemplateKind { kChatML, kLlama2, kLlama3, kZephyr, kMistral, kGemma, kPhi3, kFallback };

struct ChatTemplate {
    ChatTemplateKind kind = ChatTemplateKind::kFallback;
    std::string bos_text;  // e.g. "<s>", "<|begin_of_text|>"
    std::string eos_text;
    // Detects the family from the template source (empty source -> fallback).
    static ChatTemplate detect(std::string_view template_source, std::string bos_text, std::string eos_text);
    // The conversation as markup and message text, in order; with add_generation_prompt
    // the assistant's turn is opened. The BOS text is not included (the tokenizer adds
    // BOS as the model says).
    std::vector<ChatSegment> render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
    // render()'s segments joined into one string.
    std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
    // Strings that end an assistant turn in this format (e.g. "<|im_end|>"), as extra stop strings.
    std::vector<std::string> stop_strings() const;
};

const char* chat_template_name(ChatTemplateKind kind);

// The prompt's token ids: special tokens are parsed in markup only, message text
// is encoded as plain text.
std::vector<TokenId> encode_chat(const Tokenizer& tokenizer, std::span<const ChatSegment> segments, bool add_bos);

}  // namespace assistd::engine
