(* The paclet descriptor in the form every version reads: Paclet[...] in PacletInfo.m is the
   form Mathematica 12.0's paclet manager documents, and 12.1 and later read it too.
   Load the folder above with PacletDirectoryLoad (12.1+) or PacletDirectoryAdd (12.0); the
   Kernel extension maps Needs["MLBridge`"] to Kernel/MLBridge.wl. *)
Paclet[
  Name -> "MLBridge",
  Version -> "0.1.0",
  MathematicaVersion -> "12+",
  Description -> "Call ML models served by `mlbridge serve` (ONNX, TFLite, Keras) over local HTTP",
  Creator -> "mlbridge",
  Extensions -> {
    {"Kernel", Root -> "Kernel", Context -> "MLBridge`"}
  }
]
