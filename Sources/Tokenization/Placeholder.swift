public enum Tokenization {}
