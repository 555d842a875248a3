// TF Serving's loader without TF Serving: tensorflow::LoadSavedModel with the "serve" tag (what
// tensorflow_serving/servables/tensorflow uses), then one Session::Run of a signature.
//
//   load_savedmodel [--op_library=SO]... EXPORT_DIR SIGNATURE NAME=VALUE...   ->  one JSON object on stdout:
//   {"OUTPUT": {"shape": [...], "values": [...]}, ...}   (values flattened, row-major)
//
// Each NAME=VALUE adds one row to input NAME, a [B] vector in the dtype the signature declares (string, int32,
// int64, float); a value may hold further '=' signs. Each --op_library is dlopen'ed first, so its ops register
// as they do in TF Serving's binary, which links tensorflow-text's ops in (the SentencePiece tokenizer's).
//
// Built by `make serving-check` against the headers and libtensorflow_cc.so.2 / libtensorflow_framework.so.2 of
// the tensorflow wheel in .venv-serving (the TensorFlow that TF Serving 2.20 embeds); no Python in the process.
#include <dlfcn.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/public/session.h"

namespace {

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);  // UTF-8 bytes pass through
    }
  }
  return out + "\"";
}

std::string ToJson(const tensorflow::Tensor& t) {
  std::ostringstream out;
  out << "{\"shape\": [";
  for (int d = 0; d < t.dims(); ++d) out << (d ? ", " : "") << t.dim_size(d);
  out << "], \"values\": [";
  const int64_t n = t.NumElements();
  for (int64_t i = 0; i < n; ++i) {
    if (i) out << ", ";
    switch (t.dtype()) {
      case tensorflow::DT_STRING:
        out << Quote(std::string(t.flat<tensorflow::tstring>()(i)));
        break;
      case tensorflow::DT_INT32:
        out << t.flat<int32_t>()(i);
        break;
      case tensorflow::DT_INT64:
        out << t.flat<int64_t>()(i);
        break;
      case tensorflow::DT_FLOAT: {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.9g", t.flat<float>()(i));
        out << buf;
        break;
      }
      default:
        out << "null";
    }
  }
  out << "]}";
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string kLibrary = "--op_library=";
  while (argc > 1 && std::string(argv[1]).rfind(kLibrary, 0) == 0) {
    const std::string library = std::string(argv[1]).substr(kLibrary.size());
    if (dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
      std::cerr << "load failed: op library " << library << ": " << dlerror() << "\n";
      return 1;
    }
    ++argv;
    --argc;
  }
  if (argc < 4) {
    std::cerr << "usage: load_savedmodel [--op_library=SO]... EXPORT_DIR SIGNATURE NAME=VALUE...\n";
    return 2;
  }
  tensorflow::SavedModelBundle bundle;
  auto status = tensorflow::LoadSavedModel(tensorflow::SessionOptions(), tensorflow::RunOptions(), argv[1],
                                           {"serve"}, &bundle);
  if (!status.ok()) {
    std::cerr << "load failed: " << status.ToString() << "\n";
    return 1;
  }
  const auto& signatures = bundle.GetSignatures();
  const auto found = signatures.find(argv[2]);
  if (found == signatures.end()) {
    std::cerr << "no signature " << argv[2] << "\n";
    return 1;
  }
  const auto& signature = found->second;
  std::map<std::string, std::vector<std::string>> rows;  // input name -> its values, in order
  for (int i = 3; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto eq = arg.find('=');
    if (eq == std::string::npos) {
      std::cerr << "expected NAME=VALUE, got " << arg << "\n";
      return 2;
    }
    rows[arg.substr(0, eq)].push_back(arg.substr(eq + 1));
  }
  std::vector<std::pair<std::string, tensorflow::Tensor>> feeds;
  for (const auto& [key, values] : rows) {
    const auto input = signature.inputs().find(key);
    if (input == signature.inputs().end()) {
      std::cerr << "signature " << argv[2] << " has no input " << key << "\n";
      return 1;
    }
    const auto dtype = input->second.dtype();
    const int64_t n = static_cast<int64_t>(values.size());
    tensorflow::Tensor t(dtype, tensorflow::TensorShape({n}));
    for (int64_t j = 0; j < n; ++j) {
      switch (dtype) {
        case tensorflow::DT_STRING:
          t.vec<tensorflow::tstring>()(j) = values[j];
          break;
        case tensorflow::DT_INT32:
          t.vec<int32_t>()(j) = static_cast<int32_t>(std::stol(values[j]));
          break;
        case tensorflow::DT_INT64:
          t.vec<int64_t>()(j) = std::stoll(values[j]);
          break;
        case tensorflow::DT_FLOAT:
          t.vec<float>()(j) = std::stof(values[j]);
          break;
        default:
          std::cerr << "input " << key << ": unsupported dtype " << tensorflow::DataTypeString(dtype) << "\n";
          return 1;
      }
    }
    feeds.emplace_back(input->second.name(), t);
  }
  std::vector<std::string> keys, names;
  for (const auto& [key, info] : signature.outputs()) {
    keys.push_back(key);
    names.push_back(info.name());
  }
  std::vector<tensorflow::Tensor> outputs;
  status = bundle.session->Run(feeds, names, {}, &outputs);
  if (!status.ok()) {
    std::cerr << "run failed: " << status.ToString() << "\n";
    return 1;
  }
  std::cout << "{";
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::cout << (i ? ", " : "") << Quote(keys[i]) << ": " << ToJson(outputs[i]);
  }
  std::cout << "}" << std::endl;
  return 0;
}
