import CKernels
public enum EnginePlaceholder {}
