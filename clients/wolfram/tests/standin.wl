(* Test-only stand-ins so that the real MLBridge package runs in Mathics3.
   Mathics3 lacks URLRead/HTTPRequest, RunProcess, FailureQ, BinarySerialize/BinaryDeserialize,
   NumericArray, ByteArrayToString, ImportString[..., "RawJSON"], BitXor, UnixTime and
   GenerateSymmetricKey; its ToExpression[text, InputForm, HoldComplete] evaluates the text
   before holding it, and its
   ToString[<|...|>, InputForm] writes a Unicode arrow for "->". These definitions supply them
   with the Wolfram Language's documented meaning, as far as MLBridge and its tests use it,
   including where that meaning is inconvenient: URLRead sends libcurl's default Accept header
   (any type) unless told otherwise, decodes "Body" by the reply's charset (ISO-8859-1 when it
   names none), verifies an https server against the system's certificate store only (it takes
   no CA file, as URLRead takes none), and gives $Failed with a URLRead::invhttp message when
   no server answers; RunProcess merges ProcessEnvironment into the inherited environment and
   runs real programs (stat, id, curl), feeding them standard input when given.
   HTTP, WXF and processes run in Python: pymathics/mlbridge_http.py, pymathics/wxf_standin.py.
   Load this file BEFORE the package, so that its names resolve to these System` symbols. *)

LoadModule["pymathics.mlbridge_http"];

(* HTTPRequest[url, <|"Method", "Headers", "Body", "ContentType"|>] stays inert, as in WL. *)
(* Mathics3's Lookup, and a missing key of an empty Association, do not follow the WL. *)
standinField[spec_Association, key_String, default_] :=
  If[MemberQ[Keys[spec], key], spec[key], default];

standinHeaders[spec_Association] := Join[
  {First[#], Last[#]} & /@ standinField[spec, "Headers", {}],
  If[StringQ[standinField[spec, "ContentType", None]], {{"Content-Type", spec["ContentType"]}}, {}]];

standinBody[spec_Association] := Replace[standinField[spec, "Body", None], "" -> None];

System`URLRead::invhttp = "`1`.";

(* URLRead[request, {props}] gives <|prop -> value|>; no server: a message and $Failed. *)
System`URLRead[System`HTTPRequest[url_String, spec_Association], props_List] := Module[
  {reply = Pymathics`HTTPExchange[standinField[spec, "Method", "GET"], url,
     standinHeaders[spec], standinBody[spec]], values},
  If[reply[[1]] === 0,
    Message[URLRead::invhttp, reply[[5]]]; $Failed,
    values = <|"StatusCode" -> reply[[1]], "ContentType" -> reply[[2]], "Body" -> reply[[3]],
      "BodyByteArray" -> reply[[4]]|>;
    Association @@ MapThread[Rule, {props, values /@ props}]]];

System`FailureQ[x_] := MatchQ[x, _Failure | $Failed];

(* The kernel's proxy settings, as Preferences leave them by default. *)
System`$InternetProxyRules = {"UseProxy" -> Automatic, "HTTP" -> {}, "HTTPS" -> {},
  "FTP" -> {}, "Socks" -> {}, "UseWPAD" -> True};

Unprotect[ImportString];
ImportString[text_String, "RawJSON"] := Pymathics`RawJSONString[text];
Protect[ImportString];

System`ByteArrayToString[bytes_ByteArray] := Pymathics`BytesToText[bytes];
System`ByteArrayToString[{}] := "";

(* WXF: BinarySerialize[expr] and BinaryDeserialize[bytes, head]. *)
System`BinarySerialize::wxf = "`1`";
System`BinaryDeserialize::corrupt = "`1`";
System`BinarySerialize[expr_] := Pymathics`WXFSerialize[expr];
System`BinaryDeserialize[bytes_ByteArray] := ReleaseHold[BinaryDeserialize[bytes, Hold]];
System`BinaryDeserialize[bytes_ByteArray, head_] := Pymathics`WXFDeserialize[bytes, head];

(* Graphics containers the package returns; inert in Mathics3, as they are in the WL until
   displayed. *)
System`GraphicsRow; System`PlotLegends;

(* NumericArray[list, type] is an atom whose Normal is the list again. *)
System`NumericArray[data_List, type_String] := Pymathics`MakeNumericArray[data, type];
Unprotect[Normal];
Normal[a_NumericArray] := Pymathics`NumericArrayNormal[a];
Protect[Normal];

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

(* RunProcess[argv, opts] waits and gives <|"ExitCode", "StandardOutput", "StandardError"|>;
   ProcessEnvironment -> <|name -> value|> sets those variables on top of the inherited ones
   (the reading under which a kernel's LD_LIBRARY_PATH would still reach the child).
   RunProcess[argv, All, input] feeds the string input to its standard input. A program that
   cannot be started gives $Failed and a message, as RunProcess::pnfd does. *)
Options[System`RunProcess] = {System`ProcessEnvironment -> System`Inherited};
System`RunProcess::pnfd = "Program `1` not found.";
System`RunProcess[argv_List, opts : OptionsPattern[]] := RunProcess[argv, All, None, opts];
System`RunProcess[argv_List, All, input : (_String | None), OptionsPattern[]] := With[
  {done = Pymathics`RunArgv[argv, standinVariables[OptionValue[System`ProcessEnvironment]],
     input]},
  If[done === $Failed, Message[RunProcess::pnfd, First[argv]]; $Failed,
    <|"ExitCode" -> done[[1]], "StandardOutput" -> done[[2]], "StandardError" -> done[[3]]|>]];

standinVariables[env_Association] := MapThread[List, {Keys[env], Values[env]}];
standinVariables[_] := {};

(* BitXor of non-negative integers (Mathics3 has no bitwise functions). *)
System`BitXor[a_Integer?NonNegative, b_Integer?NonNegative] := Pymathics`BitwiseXor[a, b];

(* UnixTime[]: whole seconds since 1970, UTC. *)
System`UnixTime[] := Pymathics`UnixSeconds[];

(* GenerateSymmetricKey[Method -> "AES256"]: a SymmetricKey whose "Key" is 32 bytes from the
   system's CSPRNG (Python's secrets), as the WL documents "a high-entropy randomness source". *)
System`GenerateSymmetricKey[Method -> "AES256"] :=
  System`SymmetricKey[<|"Cipher" -> "AES256", "Key" -> Pymathics`RandomBytes[32], "KeySize" -> 256|>];
System`SymmetricKey[key_Association][property_String] := key[property];
