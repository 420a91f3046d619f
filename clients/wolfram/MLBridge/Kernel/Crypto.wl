(* ::Package:: *)
(* MLBridge`Private`: SHA-256, HMAC-SHA256, nonces and request signatures (docs/security.md).
   Read by MLBridge.wl inside its private context; not a package of its own.

   Hash[ByteArray[bytes], "SHA256"] hashes exactly those bytes and gives the digest as an
   integer; HMAC (RFC 2104) is built on it byte by byte, so every input is a list of bytes:
   text is turned into its UTF-8 bytes first, never hashed as a string. *)

sha256BlockBytes = 64;
innerPad = 54;  (* 0x36 *)
outerPad = 92;  (* 0x5c *)
proofLabel = "mlbridge server proof v1\n";
requestLabel = "mlbridge request v1\n";
signatureScheme = "MLBridge-HMAC-SHA256";

utf8Bytes[text_String] := ToCharacterCode[text, "UTF-8"];

(* The 32 digest bytes. An empty input is hashed as the empty string, since not every version
   makes an empty ByteArray. *)
sha256Bytes[{}] := IntegerDigits[Hash["", "SHA256"], 256, 32];
sha256Bytes[bytes_List] := IntegerDigits[Hash[ByteArray[bytes], "SHA256"], 256, 32];

hexString[bytes_List] := StringJoin[IntegerString[#, 16, 2] & /@ bytes];

sha256Hex[bytes_List] := hexString[sha256Bytes[bytes]];

hmacSHA256[key_List, message_List] := Module[{block},
  block = PadRight[If[Length[key] > sha256BlockBytes, sha256Bytes[key], key], sha256BlockBytes];
  sha256Bytes[Join[BitXor[#, outerPad] & /@ block,
    sha256Bytes[Join[BitXor[#, innerPad] & /@ block, message]]]]];

(* Lowercase hex HMAC-SHA256 keyed by the secret's UTF-8 bytes. *)
hmacHex[secret_String, message_String] := hexString[hmacSHA256[utf8Bytes[secret], utf8Bytes[message]]];

(* 64 hex digits from GenerateSymmetricKey, which "uses a system-specific, high-entropy
   randomness source" (RandomInteger's generators are not meant for secrets). *)
randomHex[] := hexString[Normal[GenerateSymmetricKey[Method -> "AES256"]["Key"]]];

(* Whether two strings are equal, looking at every character whatever the first difference. *)
sameText[a_String, b_String] := StringLength[a] === StringLength[b] &&
  Total[BitXor @@@ Transpose[{ToCharacterCode[a], ToCharacterCode[b]}]] === 0;
sameText[_, _] := False;

(* What the server must answer to GET /v2/health/proof?nonce=... if it knows the secret. *)
expectedProof[secret_String, nonce_String] := hmacHex[secret, proofLabel <> nonce];

(* The Authorization value of a signed request: target is the path and ?query as sent, bytes
   the exact body (an empty list for none). *)
signedAuthorization[secret_String, method_String, target_String, bytes_List] :=
  signedAuthorization[secret, method, target, bytes, ToString[UnixTime[]], randomHex[]];
signedAuthorization[secret_String, method_String, target_String, bytes_List, time_String,
    nonce_String] := With[{bodyHash = sha256Hex[bytes]},
  signatureScheme <> " ts=" <> time <> ", nonce=" <> nonce <> ", body=" <> bodyHash <> ", sig=" <>
    hmacHex[secret, StringJoin[Riffle[
      {requestLabel <> ToUpperCase[method], target, time, nonce, bodyHash}, "\n"]]]];
