/// The `post_processor` section, applied when special tokens are requested (e.g. Llama's
/// BOS). Only single sequences are supported; pair templates are ignored.
indirect enum PostProcessor {
    /// `single` template: the ids to emit, with `nil` standing for the encoded text ($A).
    case template([[Int]?])
    /// Only adjusts offsets in the reference; ids are unchanged.
    case byteLevel
    case sequence([PostProcessor])

    static let supportedTypes = "TemplateProcessing, ByteLevel, Sequence"

    static func parse(_ node: JSONNode) throws -> PostProcessor {
        let (type, typeNode) = try node.typeTag()
        switch type {
        case "TemplateProcessing":
            return try parseTemplate(node)
        case "ByteLevel":
            return .byteLevel
        case "Sequence":
            return .sequence(try node.field("processors").asArray().map(parse))
        default:
            throw typeNode.unsupported("unsupported post-processor type \"\(type)\" (supported: \(supportedTypes))")
        }
    }

    private static func parseTemplate(_ node: JSONNode) throws -> PostProcessor {
        var specials: [String: [Int]] = [:]
        if let specialNode = try node.optionalField("special_tokens") {
            let object = try specialNode.asObject()
            for (key, value) in zip(object.keys, object.values) {
                let entry = JSONNode(value: value, path: "\(specialNode.path).\(key)", file: node.file)
                specials[key] = try entry.field("ids").asArray().map { try $0.asInt() }
            }
        }
        let singleNode = try node.field("single")
        var items: [[Int]?] = []
        // Files store the template as a list of pieces; the string form ("<s> $A") is the
        // Python constructor's shorthand, accepted for hand-written files.
        if case .string(let text) = singleNode.value {
            for word in text.unicodeScalars.split(separator: " ") {
                let name = String(scalarSequence: word.prefix { $0 != ":" })
                if name.hasPrefix("$") {
                    guard name == "$" || name == "$A" || name == "$0" else {
                        throw singleNode.unsupported("the single-sequence template may only use $A, found \(name)")
                    }
                    items.append(nil)
                } else {
                    guard let ids = specials[name] else {
                        throw singleNode.invalid("special token \"\(name)\" is not listed in special_tokens")
                    }
                    items.append(ids)
                }
            }
            return .template(items)
        }
        for piece in try singleNode.asArray() {
            if let seq = try piece.optionalField("Sequence") {
                let id = try seq.string("id")
                guard id == "A" else {
                    throw seq.unsupported("the single-sequence template may only use sequence A, found \(id)")
                }
                items.append(nil)
            } else if let special = try piece.optionalField("SpecialToken") {
                let name = try special.string("id")
                guard let ids = specials[name] else {
                    throw special.invalid("special token \"\(name)\" is not listed in special_tokens")
                }
                items.append(ids)
            } else {
                throw piece.invalid("expected a \"Sequence\" or \"SpecialToken\" template piece")
            }
        }
        return .template(items)
    }

    func process(_ ids: [Int]) -> [Int] {
        switch self {
        case .template(let items):
            var out: [Int] = []
            out.reserveCapacity(ids.count + items.count)
            for item in items {
                if let special = item { out.append(contentsOf: special) } else { out.append(contentsOf: ids) }
            }
            return out
        case .byteLevel:
            return ids
        case .sequence(let steps):
            var out = ids
            for step in steps { out = step.process(out) }
            return out
        }
    }
}
