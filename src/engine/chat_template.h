#pragma once
// Renders a conversation into the prompt text a model was trained on, from
// its tokenizer.chat_template. The common families are recognised by their
// template text (ChatML, Llama 2, Llama 3, Zephyr, Mistral, Gemma, Phi-3);
// an unknown or absent template falls back to ChatML.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace assistd::engine {

struct ChatMessage {
    std::string role;  // "system", "user", "assistant"
    std::string content;
};

enum class ChatTemplateKind { kChatML, kLlama2, kLlama3, kZephyr, kMistral, kGemma, kPhi3, kFallback };

struct ChatTemplate {
    ChatTemplateKind kind = ChatTemplateKind::kFallback;
    std::string bos_text;  // e.g. "<s>", "<|begin_of_text|>"
    std::string eos_text;
    // Detects the family from the template source (empty source -> fallback).
    static ChatTemplate detect(std::string_view template_source, std::string bos_text, std::string eos_text);
    // Text of the conversation; with add_generation_prompt the assistant's turn is opened.
    // The BOS text is not included (the tokenizer adds BOS as the model says).
    std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
    // Strings that end an assistant turn in this format (e.g. "<|im_end|>"), as extra stop strings.
    std::vector<std::string> stop_strings() const;
};

const char* chat_template_name(ChatTemplateKind kind);

}  // namespace assistd::engine
