(* Test-only stand-ins so that the real MLBridge package runs in Mathics3.
   Mathics3 lacks URLRead/HTTPRequest, RunProcess, FailureQ and ImportString[..., "RawJSON"], its
   ToExpression[text, InputForm, HoldComplete] evaluates the text before holding it, and its
   ToString[<|...|>, InputForm] writes a Unicode arrow for "->"; these
   definitions supply them with the Wolfram Language's meaning (as far as MLBridge uses it).
   URLRead really talks HTTP over a socket through pymathics/mlbridge_http.py.
   Load this file BEFORE the package, so that its names resolve to these System` symbols. *)

LoadModule["pymathics.mlbridge_http"];

(* HTTPRequest[url, <|"Method", "Headers", "Body", "ContentType"|>] stays inert, as in WL. *)
standinHeaders[spec_Association] := Join[
  {First[#], Last[#]} & /@ Replace[spec["Headers"], _Missing -> {}],
  If[StringQ[spec["ContentType"]], {{"Content-Type", spec["ContentType"]}}, {}]];

standinBody[spec_Association] := Replace[spec["Body"], {_Missing -> None, "" -> None}];

(* URLRead[request, {props}] gives <|prop -> value|>; an unreachable server gives a Failure. *)
System`URLRead[System`HTTPRequest[url_String, spec_Association], props_List] := Module[
  {reply = Pymathics`HTTPExchange[Replace[spec["Method"], _Missing -> "GET"], url,
     standinHeaders[spec], standinBody[spec]], values},
  If[reply[[1]] === 0,
    Failure["ConnectionFailure", <|"MessageTemplate" -> reply[[3]]|>],
    values = <|"StatusCode" -> reply[[1]], "ContentType" -> reply[[2]], "Body" -> reply[[3]],
      "BodyByteArray" -> reply[[4]]|>;
    Association @@ MapThread[Rule, {props, values /@ props}]]];

System`FailureQ[x_] := MatchQ[x, _Failure | $Failed];

Unprotect[ImportString];
ImportString[text_String, "RawJSON"] := Pymathics`RawJSONString[text];
Protect[ImportString];

(* Mathics3 writes Rule as U+21FE in InputForm; the Wolfram Language writes "->", which is what
   MLBridge sends for <|"x" -> ..., "cotangent" -> ...|>. *)
Unprotect[ToString];
ToString[a_Association, InputForm] :=
  Block[{$standinToString = True},
    StringReplace[ToString[a, InputForm], FromCharacterCode[8702] -> "->"]] /;
  !TrueQ[$standinToString];
Protect[ToString];

Unprotect[ToExpression];
ToExpression[text_String, InputForm, head_Symbol] := Pymathics`HeldParse[text, head];
Protect[ToExpression];

(* RunProcess[argv, opts] waits and gives <|"ExitCode", "StandardOutput", "StandardError"|>.
   ProcessEnvironment is not honoured here: the environment is the argv's business. *)
System`RunProcess[argv_List, ___] := With[{done = Pymathics`RunArgv[argv]},
  <|"ExitCode" -> done[[1]], "StandardOutput" -> done[[2]], "StandardError" -> done[[3]]|>];
