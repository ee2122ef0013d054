// All of segkit's operators as one translation unit: Paddle's extension header alone takes about 7 s to
// compile, once per source file, and Paddle's builder compiles the sources one after the other (the
// first-use build on this project's machine: 44 s of CPU as three files, 25 s as one).

#include "onednn_conv.cc"  // NOLINT(build/include): a unity build
#include "onednn_linear.cc"  // NOLINT(build/include)
#include "onednn_nn.cc"    // NOLINT(build/include)
#include "resize.cc"       // NOLINT(build/include)
#include "stripe_attention.cc"  // NOLINT(build/include)
