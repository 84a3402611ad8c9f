// Opens every module that reads or writes f16 natively (SHADER_F16); directives must
// precede all declarations, so this snippet always comes first.
enable f16;
