// Chat formats of the common model families, recognised by marker strings in
// the template source, each rendered in its standard form.
#include "engine/chat_template.h"

namespace assistd::engine {

namespace {

bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

std::string_view trim(std::string_view s) {
    const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

// Formats whose turns are "<open><role><after role>content<close>" with the
// system message as an ordinary turn (ChatML, Phi-3).
struct TaggedTurns {
    std::string_view open, after_role, close;
};

std::string render_tagged(const std::vector<ChatMessage>& messages, bool add_generation_prompt, TaggedTurns tags) {
    std::string out;
    for (const ChatMessage& m : messages) {
        out += tags.open;
        out += m.role;
        out += tags.after_role;
        out += m.content;
        out += tags.close;
    }
    if (add_generation_prompt) {
        out += tags.open;
        out += "assistant";
        out += tags.after_role;
    }
    return out;
}

constexpr TaggedTurns kChatML{"<|im_start|>", "\n", "<|im_end|>\n"};
constexpr TaggedTurns kPhi3{"<|", "|>\n", "<|end|>\n"};

// Meta's Llama 2 format: the system prompt goes inside the first [INST] in
// <<SYS>> markers; each later turn starts with BOS.
std::string render_llama2(const std::vector<ChatMessage>& messages, std::string_view bos, std::string_view eos) {
    std::string out = "[INST] ";
    bool inside_turn = true;  // the first [INST] follows the BOS the tokenizer adds
    for (const ChatMessage& m : messages) {
        if (!inside_turn) {
            out += bos;
            out += "[INST] ";
            inside_turn = true;
        }
        const std::string_view content = trim(m.content);
        if (m.role == "system") {
            out += "<<SYS>>\n";
            out += content;
            out += "\n<</SYS>>\n\n";
        } else if (m.role == "assistant") {
            out += ' ';
            out += content;
            out += ' ';
            out += eos;
            inside_turn = false;
        } else {
            out += content;
            out += " [/INST]";
        }
    }
    return out;
}

// Mistral Instruct: no system role, so a system prompt leads the first user turn.
std::string render_mistral(const std::vector<ChatMessage>& messages, std::string_view eos) {
    std::string out;
    std::string pending_system;
    for (const ChatMessage& m : messages) {
        if (m.role == "system") {
            pending_system += m.content;
            pending_system += "\n\n";
        } else if (m.role == "assistant") {
            out += m.content;
            out += eos;
        } else {
            out += "[INST] ";
            out += pending_system;
            pending_system.clear();
            out += m.content;
            out += " [/INST]";
        }
    }
    return out;
}

std::string render_llama3(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
    std::string out;
    for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>";
        out += m.role;
        out += "<|end_header_id|>\n\n";
        out += trim(m.content);
        out += "<|eot_id|>";
    }
    if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    return out;
}

std::string render_zephyr(const std::vector<ChatMessage>& messages, bool add_generation_prompt, std::string_view eos) {
    std::string out;
    for (const ChatMessage& m : messages) {
        out += "<|";
        out += m.role;
        out += "|>\n";
        out += m.content;
        out += eos;
        out += '\n';
    }
    if (add_generation_prompt) out += "<|assistant|>\n";
    return out;
}

// Gemma has no system role: the system prompt opens the first user turn; "assistant" is "model".
std::string render_gemma(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
    std::string out;
    std::string pending_system;
    for (const ChatMessage& m : messages) {
        if (m.role == "system") {
            if (!pending_system.empty()) pending_system += "\n\n";
            pending_system += trim(m.content);
            continue;
        }
        const bool is_model = m.role == "assistant" || m.role == "model";
        out += "<start_of_turn>";
        out += is_model ? "model" : m.role;
        out += '\n';
        if (!is_model && !pending_system.empty()) {
            out += pending_system;
            out += "\n\n";
            pending_system.clear();
        }
        out += trim(m.content);
        out += "<end_of_turn>\n";
    }
    if (add_generation_prompt) out += "<start_of_turn>model\n";
    return out;
}

}  // namespace

ChatTemplate ChatTemplate::detect(std::string_view source, std::string bos_text, std::string eos_text) {
    ChatTemplate t;
    t.bos_text = std::move(bos_text);
    t.eos_text = std::move(eos_text);
    if (contains(source, "<|im_start|>")) {
        t.kind = ChatTemplateKind::kChatML;
    } else if (contains(source, "<|start_header_id|>")) {
        t.kind = ChatTemplateKind::kLlama3;
    } else if (contains(source, "[INST]")) {
        t.kind = contains(source, "<<SYS>>") ? ChatTemplateKind::kLlama2 : ChatTemplateKind::kMistral;
    } else if (contains(source, "<start_of_turn>")) {
        t.kind = ChatTemplateKind::kGemma;
    } else if (contains(source, "<|user|>") && contains(source, "<|end|>")) {
        t.kind = ChatTemplateKind::kPhi3;
    } else if (contains(source, "<|user|>")) {
        // Zephyr ends turns with eos_token ("</s>"); "<|user|>" alone is close enough to render it.
        t.kind = ChatTemplateKind::kZephyr;
    } else {
        t.kind = ChatTemplateKind::kFallback;
    }
    return t;
}

std::string ChatTemplate::apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
    const std::string_view bos = bos_text.empty() ? std::string_view("<s>") : std::string_view(bos_text);
    const std::string_view eos = eos_text.empty() ? std::string_view("</s>") : std::string_view(eos_text);
    switch (kind) {
        case ChatTemplateKind::kChatML:
        case ChatTemplateKind::kFallback: return render_tagged(messages, add_generation_prompt, kChatML);
        case ChatTemplateKind::kLlama2: return render_llama2(messages, bos, eos);
        case ChatTemplateKind::kMistral: return render_mistral(messages, eos);
        case ChatTemplateKind::kLlama3: return render_llama3(messages, add_generation_prompt);
        case ChatTemplateKind::kZephyr: return render_zephyr(messages, add_generation_prompt, eos);
        case ChatTemplateKind::kGemma: return render_gemma(messages, add_generation_prompt);
        case ChatTemplateKind::kPhi3: return render_tagged(messages, add_generation_prompt, kPhi3);
    }
    return render_tagged(messages, add_generation_prompt, kChatML);
}

std::vector<std::string> ChatTemplate::stop_strings() const {
    const std::string eos = eos_text.empty() ? std::string("</s>") : eos_text;
    switch (kind) {
        case ChatTemplateKind::kChatML:
        case ChatTemplateKind::kFallback: return {"<|im_end|>", "<|im_start|>"};
        case ChatTemplateKind::kLlama2:
        case ChatTemplateKind::kMistral: return {eos, "[INST]"};
        case ChatTemplateKind::kLlama3: return {"<|eot_id|>", "<|start_header_id|>"};
        case ChatTemplateKind::kZephyr: return {eos, "<|user|>"};
        case ChatTemplateKind::kGemma: return {"<end_of_turn>", "<start_of_turn>"};
        case ChatTemplateKind::kPhi3: return {"<|end|>", "<|endoftext|>", "<|user|>"};
    }
    return {};
}

const char* chat_template_name(ChatTemplateKind kind) {
    switch (kind) {
        case ChatTemplateKind::kChatML: return "chatml";
        case ChatTemplateKind::kLlama2: return "llama2";
        case ChatTemplateKind::kLlama3: return "llama3";
        case ChatTemplateKind::kZephyr: return "zephyr";
        case ChatTemplateKind::kMistral: return "mistral";
        case ChatTemplateKind::kGemma: return "gemma";
        case ChatTemplateKind::kPhi3: return "phi3";
        case ChatTemplateKind::kFallback: return "fallback";
    }
    return "unknown";
}

}  // namespace assistd::engine
