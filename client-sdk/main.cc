// aijobsctl entry point: wiring only; the logic is in cli.cc.
#include <iostream>

#include "client-sdk/cli.h"

int main(int argc, char** argv) {
  return aijobs::ctl::RunCli(argc, argv, std::cout, std::cerr, std::cin);
}
