// Chat formats of the common model families, recognised by marker strings in
// the template source, each rendered in its standard form.
#include "engine/chat_template.h"

#include <utility>

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

// Collects a rendering as segments, joining neighbouring stretches of the same kind.
class SegmentWriter {
public:
    void markup(std::string_view s) { append(s, /*is_markup=*/true); }
    void text(std::string_view s) { append(s, /*is_markup=*/false); }
    void append(std::string_view s, bool is_markup) {
        if (s.empty()) return;
        if (!segments_.empty() && segments_.back().is_markup == is_markup) {
            segments_.back().text += s;
        } else {
            segments_.push_back(ChatSegment{std::string(s), is_markup});
        }
    }
    bool empty() const { return segments_.empty(); }
    std::vector<ChatSegment> take() { return std::exchange(segments_, {}); }

private:
    std::vector<ChatSegment> segments_;
};

// Formats whose turns are "<open><role><after role>content<close>" with the
// system message as an ordinary turn (ChatML, Phi-3).
struct TaggedTurns {
    std::string_view open, after_role, close;
};

std::vector<ChatSegment> render_tagged(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                       TaggedTurns tags) {
    SegmentWriter out;
    for (const ChatMessage& m : messages) {
        out.markup(tags.open);
        out.markup(m.role);
        out.markup(tags.after_role);
        out.text(m.content);
        out.markup(tags.close);
    }
    if (add_generation_prompt) {
        out.markup(tags.open);
        out.markup("assistant");
        out.markup(tags.after_role);
    }
    return out.take();
}

constexpr TaggedTurns kChatML{"<|im_start|>", "\n", "<|im_end|>\n"};
constexpr TaggedTurns kPhi3{"<|", "|>\n", "<|end|>\n"};

// Meta's Llama 2 format: the system prompt goes inside the first [INST] in
// <<SYS>> markers; each later turn starts with BOS.
std::vector<ChatSegment> render_llama2(const std::vector<ChatMessage>& messages, std::string_view bos,
                                       std::string_view eos) {
    SegmentWriter out;
    out.markup("[INST] ");
    bool inside_turn = true;  // the first [INST] follows the BOS the tokenizer adds
    for (const ChatMessage& m : messages) {
        if (!inside_turn) {
            out.markup(bos);
            out.markup("[INST] ");
            inside_turn = true;
        }
        const std::string_view content = trim(m.content);
        if (m.role == "system") {
            out.markup("<<SYS>>\n");
            out.text(content);
            out.markup("\n<</SYS>>\n\n");
        } else if (m.role == "assistant") {
            out.markup(" ");
            out.text(content);
            out.markup(" ");
            out.markup(eos);
            inside_turn = false;
        } else {
            out.text(content);
            out.markup(" [/INST]");
        }
    }
    return out.take();
}

// Mistral Instruct: no system role, so a system prompt leads the first user turn.
std::vector<ChatSegment> render_mistral(const std::vector<ChatMessage>& messages, std::string_view eos) {
    SegmentWriter out;
    std::vector<std::string_view> pending_system;
    for (const ChatMessage& m : messages) {
        if (m.role == "system") {
            pending_system.push_back(m.content);
        } else if (m.role == "assistant") {
            out.text(m.content);
            out.markup(eos);
        } else {
            out.markup("[INST] ");
            for (std::string_view system : pending_system) {
                out.text(system);
                out.markup("\n\n");
            }
            pending_system.clear();
            out.text(m.content);
            out.markup(" [/INST]");
        }
    }
    return out.take();
}

std::vector<ChatSegment> render_llama3(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
    SegmentWriter out;
    for (const ChatMessage& m : messages) {
        out.markup("<|start_header_id|>");
        out.markup(m.role);
        out.markup("<|end_header_id|>\n\n");
        out.text(trim(m.content));
        out.markup("<|eot_id|>");
    }
    if (add_generation_prompt) out.markup("<|start_header_id|>assistant<|end_header_id|>\n\n");
    return out.take();
}

std::vector<ChatSegment> render_zephyr(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                       std::string_view eos) {
    SegmentWriter out;
    for (const ChatMessage& m : messages) {
        out.markup("<|");
        out.markup(m.role);
        out.markup("|>\n");
        out.text(m.content);
        out.markup(eos);
        out.markup("\n");
    }
    if (add_generation_prompt) out.markup("<|assistant|>\n");
    return out.take();
}

// Gemma has no system role: the system prompt opens the first user turn; "assistant" is "model".
std::vector<ChatSegment> render_gemma(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
    SegmentWriter out;
    SegmentWriter pending_system;
    for (const ChatMessage& m : messages) {
        if (m.role == "system") {
            if (!pending_system.empty()) pending_system.markup("\n\n");
            pending_system.text(trim(m.content));
            continue;
        }
        const bool is_model = m.role == "assistant" || m.role == "model";
        out.markup("<start_of_turn>");
        out.markup(is_model ? std::string_view("model") : std::string_view(m.role));
        out.markup("\n");
        if (!is_model && !pending_system.empty()) {
            for (const ChatSegment& segment : pending_system.take()) out.append(segment.text, segment.is_markup);
            out.markup("\n\n");
        }
        out.text(trim(m.content));
        out.markup("<end_of_turn>\n");
    }
    if (add_generation_prompt) out.markup("<start_of_turn>model\n");
    return out.take();
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

std::vector<ChatSegment> ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                              bool add_generation_prompt) const {
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

std::string ChatTemplate::apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
    std::string out;
    for (const ChatSegment& segment : render(messages, add_generation_prompt)) out += segment.text;
    return out;
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

std::vector<TokenId> encode_chat(const Tokenizer& tokenizer, std::span<const ChatSegment> segments, bool add_bos) {
    std::vector<TextSegment> parts;
    parts.reserve(segments.size());
    for (const ChatSegment& segment : segments) parts.push_back(TextSegment{segment.text, segment.is_markup});
    return tokenizer.encode_segments(parts, add_bos);
}

}  // namespace assistd::engine
