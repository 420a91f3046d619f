(* Paclet[...] form so that Mathematica 12.0 reads it as well as later versions. *)
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
